-- agenthost schema 6: the turn's two steps as single flat functions, answering the window
-- after a caller's mark and the agent state (schema 5's agenthost_begin_turn_state and
-- agenthost_commit_turn_state, without their nested calls):
-- for the per-process window cache (turns/window_cache.py) and the Redis cache in front of
-- PostgreSQL (--cache, stores/cached.py).
--
-- A session's version is (created_at, message_count): the history only grows by commits,
-- each adding two messages (and the only way metadata changes, besides a new incarnation,
-- which has a new created_at). A cached window and metadata labelled with the version
-- PostgreSQL reports under the session row's lock are the committed ones.
--
-- The functions of schemas 1-5 stay, so servers of the previous release keep working during a
-- rolling update.

-- The first step of a turn. As agenthost_begin_turn_state, in one function body (no nested
-- calls), with the fingerprint written by the turn's own insert: created_at names the
-- session's incarnation; with a mark (p_known_created, p_known_count) of this incarnation
-- and not ahead of it, history holds only the window's messages from the mark on (delta).
CREATE FUNCTION agenthost_begin(
    p_sid text, p_tid text, p_message text, p_patch jsonb, p_lease_ms integer,
    p_window integer, p_ttl double precision, p_fingerprint text,
    p_known_created double precision, p_known_count integer,
    OUT kind text, OUT fence bigint, OUT message_count integer, OUT created boolean,
    OUT created_at double precision, OUT metadata jsonb, OUT history json, OUT turn jsonb,
    OUT busy_turn_id text, OUT delta boolean, OUT state bytea)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now double precision := agenthost_now();
    v_fence bigint;
    v_count integer;
    v_expires double precision;
    v_lease_tid text;
    v_lease_expires double precision;
    v_status text;
    v_fp text;
    v_since integer;
    v_meta jsonb;
    v_state bytea;
BEGIN
    -- Scalar variables, not a row variable: only the columns the step needs are copied.
    created := false;
    delta := false;
    SELECT s.fence, s.message_count, s.created_at, s.expires_at, s.lease_turn_id,
           s.lease_expires_at, s.metadata, s.state
      INTO v_fence, v_count, created_at, v_expires, v_lease_tid, v_lease_expires, v_meta,
           v_state
      FROM agenthost_sessions s WHERE s.session_id = p_sid FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO agenthost_sessions (session_id, created_at, updated_at, expires_at)
        VALUES (p_sid, v_now, v_now, v_now + p_ttl) ON CONFLICT (session_id) DO NOTHING;
        created := FOUND;
        SELECT s.fence, s.message_count, s.created_at, s.expires_at, s.lease_turn_id,
               s.lease_expires_at, s.metadata, s.state
          INTO v_fence, v_count, created_at, v_expires, v_lease_tid, v_lease_expires, v_meta,
               v_state
          FROM agenthost_sessions s WHERE s.session_id = p_sid FOR UPDATE;
    END IF;
    IF NOT created AND v_expires <= v_now THEN
        PERFORM agenthost_forget(p_sid);
        UPDATE agenthost_sessions SET created_at = v_now, updated_at = v_now, turns = 0,
            message_count = 0, metadata = '{}', lease_turn_id = NULL, lease_expires_at = 0
        WHERE session_id = p_sid;
        created := true;
        v_count := 0;
        v_meta := '{}';
        v_state := NULL;  -- agenthost_forget dropped it
        created_at := v_now;
    END IF;
    IF NOT created THEN
        SELECT t.status, t.fingerprint INTO v_status, v_fp
          FROM agenthost_turns t WHERE t.session_id = p_sid AND t.turn_id = p_tid;
        IF FOUND THEN
            IF p_fingerprint <> '' AND v_fp <> '' AND v_fp <> p_fingerprint THEN
                kind := 'reused';
                created_at := NULL;
                RETURN;
            END IF;
            IF v_status = 'completed' THEN
                kind := 'completed';
                SELECT agenthost_turn_json(t) INTO turn FROM agenthost_turns t
                WHERE t.session_id = p_sid AND t.turn_id = p_tid;
                RETURN;
            END IF;
        END IF;
        IF v_lease_tid IS NOT NULL AND v_lease_expires > v_now THEN
            kind := 'busy';
            busy_turn_id := v_lease_tid;
            created_at := NULL;
            RETURN;
        END IF;
    END IF;
    kind := 'started';
    fence := v_fence + 1;
    message_count := v_count;
    -- expires_at is indexed: without a retention it stays Infinity, so this update (and
    -- the commit's) changes no indexed column and can be a heap-only (HOT) update.
    UPDATE agenthost_sessions SET fence = v_fence + 1, lease_turn_id = p_tid,
        lease_fence = v_fence + 1, lease_expires_at = v_now + p_lease_ms / 1000.0,
        expires_at = v_now + p_ttl
    WHERE session_id = p_sid;
    INSERT INTO agenthost_turns AS t (session_id, turn_id, status, message, created_at,
        updated_at, fingerprint)
    VALUES (p_sid, p_tid, 'running', p_message, v_now, v_now, p_fingerprint)
    ON CONFLICT (session_id, turn_id) DO UPDATE SET status = 'running',
        message = excluded.message, response = NULL, error_code = NULL, error_message = NULL,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        fingerprint = CASE WHEN excluded.fingerprint <> '' THEN excluded.fingerprint
                           ELSE t.fingerprint END;
    metadata := v_meta || coalesce(p_patch, '{}');
    state := v_state;
    delta := coalesce(NOT created AND p_known_created = created_at
        AND p_known_count <= v_count, false);
    v_since := CASE WHEN delta THEN p_known_count ELSE 0 END;
    history := '[]';
    IF p_window > 0 AND v_count > v_since THEN
        -- json of whole rows, not jsonb_build_object: measured at a 50-message window,
        -- 0.08 ms of PostgreSQL's CPU against 0.18.
        SELECT coalesce(json_agg(w ORDER BY seq), '[]') INTO history
        FROM (SELECT role, content, turn_id, created_at, seq FROM agenthost_messages
              WHERE session_id = p_sid AND seq < v_count AND seq >= v_since
              ORDER BY seq DESC LIMIT p_window) w;
    END IF;
END $$;

-- The commit, fenced, in one function body: the first statement checks the lease, locks
-- the row and updates it (count, metadata, the agent state when p_state is given, lease
-- dropped); then both messages are inserted
-- and the turn completed. Returns the turn's created_at and the commit's time; both NULL if
-- the lease is not ours (nothing written).
CREATE FUNCTION agenthost_commit(
    p_sid text, p_tid text, p_fence bigint,
    p_user text, p_user_at double precision, p_user_seq integer,
    p_answer text, p_answer_at double precision, p_answer_seq integer,
    p_metadata jsonb, p_ttl double precision, p_state bytea,
    OUT turn_created_at double precision, OUT committed_at double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := agenthost_now();
    v_wanted boolean;
BEGIN
    UPDATE agenthost_sessions SET turns = turns + 1, message_count = p_answer_seq + 1,
        metadata = p_metadata, updated_at = v_now, expires_at = v_now + p_ttl,
        lease_turn_id = NULL, lease_expires_at = 0, state = coalesce(p_state, state)
    WHERE session_id = p_sid AND expires_at > v_now AND lease_turn_id = p_tid
        AND lease_fence = p_fence AND lease_expires_at > v_now
    RETURNING release_wanted INTO v_wanted;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO agenthost_messages (session_id, seq, role, content, turn_id, created_at)
    VALUES (p_sid, p_user_seq, 'user', p_user, p_tid, p_user_at),
           (p_sid, p_answer_seq, 'assistant', p_answer, p_tid, p_answer_at);
    UPDATE agenthost_turns SET status = 'completed', response = p_answer, error_code = NULL,
        error_message = NULL, updated_at = v_now
    WHERE session_id = p_sid AND turn_id = p_tid RETURNING created_at INTO turn_created_at;
    committed_at := v_now;
    IF v_wanted THEN  -- a waiter asked (rare): tell it, and clear the request
        UPDATE agenthost_sessions SET release_wanted = false WHERE session_id = p_sid;
        PERFORM pg_notify('agenthost_released', p_sid);
    END IF;
END $$;

-- The version half a cached idempotency answer is checked against: the live session's
-- created_at (its incarnation), or NULL. A read: no lock, no write.
CREATE FUNCTION agenthost_session_created(p_sid text) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT created_at FROM agenthost_sessions
    WHERE session_id = p_sid AND expires_at > agenthost_now()
$$;
