-- agenthost schema 8: the turn's two steps for many turns in one statement, so one process
-- sends every begin (or commit) that waited while its previous one was in flight as a
-- single call (stores/pg_batch.py): one round trip, one transaction, one commit record
-- and one WAL flush for the lot.
--
-- Each row gets the outcome the single-turn function of schema 6 (agenthost_begin,
-- agenthost_commit) gives it alone (started, busy, completed, reused; committed or fenced
-- out), but the work is set-based: a handful of statements for the whole batch, not one
-- set per row. (A first version ran agenthost_begin/agenthost_commit once per row: one
-- round trip and one transaction for the batch, but PostgreSQL's CPU per turn hardly fell,
-- since it went to starting the functions' ten or so statements per turn.) The session
-- rows are locked first, in session_id order: every multi-session transaction of
-- agenthost locks them in that one order, so two batches (of this process or another)
-- never wait on each other in a cycle; the rows' state is read after the locks, so it is
-- the latest committed. Rare cases (a session unknown or expired, so created or renewed
-- here; a session twice in one batch) go through agenthost_begin row by row, in order. A
-- statement that fails as a whole (an error of PostgreSQL's) rolls back every row; the
-- caller then sends each row alone, so one bad row never fails the others. `idx` is the
-- row's 1-based position in the arrays.
--
-- Every row is found by its key: the functions turn off sequential scans, hash and merge
-- joins for their own statements, since the planner, guessing 100 rows from unnest and
-- seeing small or unanalysed tables, otherwise picks a scan of a whole table, whose cost
-- grows with the number of sessions (seen in a profile: half of PostgreSQL's time in
-- visibility checks and hash buckets).

CREATE FUNCTION agenthost_begin_many(
    p_sid text[], p_tid text[], p_message text[], p_patch text[], p_lease_ms integer[],
    p_window integer[], p_ttl double precision[], p_fingerprint text[],
    p_known_created double precision[], p_known_count integer[])
RETURNS TABLE (idx integer, kind text, fence bigint, message_count integer, created boolean,
    created_at double precision, metadata text, history text, turn text, busy_turn_id text,
    delta boolean, state bytea)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    v_now double precision := extract(epoch FROM clock_timestamp());
    r record;
    -- The rows that take their session's lease here, set-based after the loop.
    s_idx integer[] := '{}';
    s_sid text[] := '{}';
    s_tid text[] := '{}';
    s_message text[] := '{}';
    s_fence bigint[] := '{}';
    s_lease_ms integer[] := '{}';
    s_ttl double precision[] := '{}';
    s_fp text[] := '{}';
    s_count integer[] := '{}';
    s_since integer[] := '{}';
    s_window integer[] := '{}';
    s_created_at double precision[] := '{}';
    s_meta text[] := '{}';
    s_delta boolean[] := '{}';
    s_state bytea[] := '{}';
BEGIN
    PERFORM 1 FROM agenthost_sessions s WHERE s.session_id = ANY (p_sid)
        ORDER BY s.session_id FOR UPDATE;
    FOR r IN
        SELECT u.i::integer AS i, u.sid, u.tid, u.message, u.patch, u.lease_ms, u.win, u.ttl,
               u.fp, u.known_created, u.known_count,
               count(*) OVER (PARTITION BY u.sid) AS times,
               s.session_id IS NOT NULL AND s.expires_at > v_now AS live,
               s.fence AS s_fence, s.message_count AS s_count, s.created_at AS s_created,
               s.lease_turn_id AS s_lease_tid, s.lease_expires_at AS s_lease_expires,
               s.metadata AS s_meta, s.state AS s_state,
               t.status AS t_status, t.fingerprint AS t_fp,
               CASE WHEN t.status = 'completed' THEN agenthost_turn_json(t)::text END AS t_json
        FROM unnest(p_sid, p_tid, p_message, p_patch, p_lease_ms, p_window, p_ttl,
                    p_fingerprint, p_known_created, p_known_count) WITH ORDINALITY
             AS u(sid, tid, message, patch, lease_ms, win, ttl, fp, known_created,
                  known_count, i)
        LEFT JOIN agenthost_sessions s ON s.session_id = u.sid
        LEFT JOIN agenthost_turns t ON t.session_id = u.sid AND t.turn_id = u.tid
        ORDER BY u.sid, u.i
    LOOP
        idx := r.i;
        created := false;
        created_at := r.s_created;
        fence := NULL; message_count := NULL; metadata := NULL; history := NULL;
        turn := NULL; busy_turn_id := NULL; delta := NULL; state := NULL;
        IF r.times > 1 OR NOT r.live THEN
            -- Created or renewed here, or a session twice in the batch: the single step,
            -- which sees what the rows before it did.
            SELECT b.kind, b.fence, b.message_count, b.created, b.created_at,
                   b.metadata::text, b.history::text, b.turn::text, b.busy_turn_id, b.delta,
                   b.state
              INTO kind, fence, message_count, created, created_at, metadata, history,
                   turn, busy_turn_id, delta, state
              FROM agenthost_begin(r.sid, r.tid, r.message, r.patch::jsonb, r.lease_ms,
                                   r.win, r.ttl, r.fp, r.known_created, r.known_count) AS b;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF r.t_status IS NOT NULL AND r.fp <> '' AND r.t_fp <> '' AND r.t_fp <> r.fp THEN
            kind := 'reused';
            created_at := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF r.t_status = 'completed' THEN
            kind := 'completed';
            turn := r.t_json;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF r.s_lease_tid IS NOT NULL AND r.s_lease_expires > v_now THEN
            kind := 'busy';
            busy_turn_id := r.s_lease_tid;
            created_at := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        s_idx := s_idx || r.i;
        s_sid := s_sid || r.sid;
        s_tid := s_tid || r.tid;
        s_message := s_message || r.message;
        s_fence := s_fence || (r.s_fence + 1);
        s_lease_ms := s_lease_ms || r.lease_ms;
        s_ttl := s_ttl || r.ttl;
        s_fp := s_fp || r.fp;
        s_count := s_count || r.s_count;
        s_delta := s_delta || coalesce(r.known_created = r.s_created
            AND r.known_count <= r.s_count, false);
        s_since := s_since || CASE WHEN s_delta[cardinality(s_delta)] THEN r.known_count
                                   ELSE 0 END;
        s_window := s_window || r.win;
        s_created_at := s_created_at || r.s_created;
        s_meta := s_meta || (r.s_meta || coalesce(r.patch::jsonb, '{}'))::text;
        s_state := s_state || r.s_state;
    END LOOP;
    IF cardinality(s_idx) = 0 THEN
        RETURN;
    END IF;
    -- The leases. expires_at stays Infinity without a retention: a heap-only update.
    UPDATE agenthost_sessions s SET fence = u.fence, lease_turn_id = u.tid,
        lease_fence = u.fence, lease_expires_at = v_now + u.lease_ms / 1000.0,
        expires_at = v_now + u.ttl
    FROM unnest(s_sid, s_tid, s_fence, s_lease_ms, s_ttl) AS u(sid, tid, fence, lease_ms, ttl)
    WHERE s.session_id = u.sid;
    INSERT INTO agenthost_turns AS t (session_id, turn_id, status, message, created_at,
        updated_at, fingerprint)
    SELECT u.sid, u.tid, 'running', u.message, v_now, v_now, u.fp
    FROM unnest(s_sid, s_tid, s_message, s_fp) AS u(sid, tid, message, fp)
    ON CONFLICT (session_id, turn_id) DO UPDATE SET status = 'running',
        message = excluded.message, response = NULL, error_code = NULL, error_message = NULL,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        fingerprint = CASE WHEN excluded.fingerprint <> '' THEN excluded.fingerprint
                           ELSE t.fingerprint END;
    -- Each window as agenthost_begin reads it (json of whole rows), all in one statement.
    RETURN QUERY
    SELECT u.i, 'started'::text, u.fence, u.cnt, false, u.created_at, u.meta,
           coalesce(w.history, '[]'), NULL::text, NULL::text, u.delta, u.st
    FROM unnest(s_idx, s_sid, s_fence, s_count, s_since, s_window, s_created_at, s_meta,
                s_delta, s_state)
         AS u(i, sid, fence, cnt, since, win, created_at, meta, delta, st)
    LEFT JOIN LATERAL (
        SELECT json_agg(m ORDER BY m.seq)::text AS history
        FROM (SELECT g.role, g.content, g.turn_id, g.created_at, g.seq
              FROM agenthost_messages g
              WHERE g.session_id = u.sid AND g.seq < u.cnt AND g.seq >= u.since
              ORDER BY g.seq DESC LIMIT u.win) m
    ) w ON u.win > 0 AND u.cnt > u.since;
END $$;

-- Commits of many turns, each fenced as agenthost_commit: committed_at NULL (nothing of
-- that row written) where the lease is not the row's. Two statements for the batch: the
-- locks, then one that updates the sessions whose lease is the row's, appends both
-- messages of each and completes its turn.
CREATE FUNCTION agenthost_commit_many(
    p_sid text[], p_tid text[], p_fence bigint[],
    p_user text[], p_user_at double precision[], p_user_seq integer[],
    p_answer text[], p_answer_at double precision[], p_answer_seq integer[],
    p_metadata text[], p_ttl double precision[], p_state bytea[])
RETURNS TABLE (idx integer, turn_created_at double precision,
    committed_at double precision)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    v_now double precision := extract(epoch FROM clock_timestamp());
    r record;
BEGIN
    PERFORM 1 FROM agenthost_sessions s WHERE s.session_id = ANY (p_sid)
        ORDER BY s.session_id FOR UPDATE;
    FOR r IN
        WITH input AS (
            SELECT * FROM unnest(p_sid, p_tid, p_fence, p_user, p_user_at, p_user_seq,
                p_answer, p_answer_at, p_answer_seq, p_metadata, p_ttl, p_state)
                WITH ORDINALITY AS u(sid, tid, fence, usr, usr_at, usr_seq, answer,
                                     answer_at, answer_seq, meta, ttl, st, i)
        ), ok AS (
            -- release_wanted is left as it is, so RETURNING tells whether a waiter asked.
            UPDATE agenthost_sessions s SET turns = s.turns + 1,
                message_count = u.answer_seq + 1, metadata = u.meta::jsonb,
                updated_at = v_now, expires_at = v_now + u.ttl, lease_turn_id = NULL,
                lease_expires_at = 0, state = coalesce(u.st, s.state)
            FROM input u
            WHERE s.session_id = u.sid AND s.expires_at > v_now AND s.lease_turn_id = u.tid
                AND s.lease_fence = u.fence AND s.lease_expires_at > v_now
            RETURNING u.*, s.release_wanted AS wanted
        ), appended AS (
            INSERT INTO agenthost_messages (session_id, seq, role, content, turn_id,
                created_at)
            SELECT ok.sid, ok.usr_seq, 'user', ok.usr, ok.tid, ok.usr_at FROM ok
            UNION ALL
            SELECT ok.sid, ok.answer_seq, 'assistant', ok.answer, ok.tid, ok.answer_at FROM ok
        ), completed AS (
            UPDATE agenthost_turns t SET status = 'completed', response = ok.answer,
                error_code = NULL, error_message = NULL, updated_at = v_now
            FROM ok WHERE t.session_id = ok.sid AND t.turn_id = ok.tid
            RETURNING ok.i, t.created_at
        )
        SELECT u.i::integer AS i, c.created_at, ok.i IS NOT NULL AS done, ok.wanted, u.sid
        FROM input u LEFT JOIN ok ON ok.i = u.i LEFT JOIN completed c ON c.i = u.i
    LOOP
        idx := r.i;
        turn_created_at := r.created_at;
        committed_at := CASE WHEN r.done THEN v_now END;
        IF r.wanted THEN  -- a waiter asked (rare): tell it, and clear the request
            UPDATE agenthost_sessions SET release_wanted = false WHERE session_id = r.sid;
            PERFORM pg_notify('agenthost_released', r.sid);
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
