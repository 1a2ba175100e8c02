-- agenthost schema 1: sessions, their append-only messages and their turns, and one
-- server-side function per step of a turn (one round trip each). Every table is keyed by
-- session_id first, the column a distributed PostgreSQL (Citus) shards on.

CREATE TABLE agenthost_sessions (
    session_id text PRIMARY KEY,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    -- 'Infinity' unless a retention is set: a conversation is kept until deleted.
    expires_at double precision NOT NULL,
    turns integer NOT NULL DEFAULT 0,
    message_count integer NOT NULL DEFAULT 0,
    fence bigint NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL DEFAULT '{}',
    lease_turn_id text,
    lease_fence bigint NOT NULL DEFAULT 0,
    lease_expires_at double precision NOT NULL DEFAULT 0,
    -- Set by a process waiting for this session's lease; the step that drops the lease
    -- then sends a notification (and only then, so a turn without waiters notifies nobody).
    release_wanted boolean NOT NULL DEFAULT false
);
CREATE INDEX agenthost_sessions_expiry ON agenthost_sessions (expires_at);

CREATE TABLE agenthost_messages (
    session_id text NOT NULL,
    seq integer NOT NULL,
    role text NOT NULL,
    content text NOT NULL,
    turn_id text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE agenthost_turns (
    session_id text NOT NULL,
    turn_id text NOT NULL,
    status text NOT NULL,
    message text NOT NULL,
    response text,
    error_code text,
    error_message text,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (session_id, turn_id)
);

CREATE FUNCTION agenthost_now() RETURNS double precision
LANGUAGE sql VOLATILE AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

CREATE FUNCTION agenthost_turn_json(t agenthost_turns) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'status', t.status, 'message', t.message, 'response', t.response,
        'error_code', t.error_code, 'error_message', t.error_message,
        'created_at', t.created_at, 'updated_at', t.updated_at)
$$;

CREATE FUNCTION agenthost_forget(p_sid text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM agenthost_messages WHERE session_id = p_sid;
    DELETE FROM agenthost_turns WHERE session_id = p_sid;
$$;

-- Create an empty session; NULL if a live one exists. An expired one is replaced, keeping
-- its fence so that fences only grow.
CREATE FUNCTION agenthost_create_session(p_sid text, p_metadata jsonb, p_ttl double precision)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := agenthost_now();
    v_expires double precision;
BEGIN
    INSERT INTO agenthost_sessions (session_id, created_at, updated_at, expires_at, metadata)
    VALUES (p_sid, v_now, v_now, v_now + p_ttl, p_metadata)
    ON CONFLICT (session_id) DO NOTHING;
    IF FOUND THEN
        RETURN v_now;
    END IF;
    SELECT expires_at INTO v_expires FROM agenthost_sessions WHERE session_id = p_sid FOR UPDATE;
    IF v_expires > v_now THEN
        RETURN NULL;
    END IF;
    PERFORM agenthost_forget(p_sid);
    UPDATE agenthost_sessions SET created_at = v_now, updated_at = v_now,
        expires_at = v_now + p_ttl, turns = 0, message_count = 0, metadata = p_metadata,
        lease_turn_id = NULL, lease_expires_at = 0, release_wanted = false
    WHERE session_id = p_sid;
    RETURN v_now;
END $$;

CREATE FUNCTION agenthost_delete_session(p_sid text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := agenthost_now();
    v_row agenthost_sessions;
BEGIN
    DELETE FROM agenthost_sessions WHERE session_id = p_sid RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM agenthost_forget(p_sid);
    IF v_row.release_wanted THEN
        PERFORM pg_notify('agenthost_released', p_sid);
    END IF;
    RETURN v_row.expires_at > v_now;
END $$;

-- Up to p_limit messages with seq < p_before, oldest first, as a JSON array; NULL if the
-- session is unknown or expired.
CREATE FUNCTION agenthost_page(p_sid text, p_limit integer, p_before integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN NOT EXISTS (
        SELECT 1 FROM agenthost_sessions WHERE session_id = p_sid AND expires_at > agenthost_now()
    ) THEN NULL ELSE (
        SELECT coalesce(jsonb_agg(jsonb_build_object('role', role, 'content', content,
            'turn_id', turn_id, 'created_at', created_at, 'seq', seq) ORDER BY seq), '[]')
        FROM (SELECT * FROM agenthost_messages WHERE session_id = p_sid AND seq < p_before
              ORDER BY seq DESC LIMIT p_limit) page
    ) END
$$;

-- The first step of a turn (stores/base.py): the stored answer, or busy, or the lease with
-- the history window and metadata. kind is 'completed', 'busy' or 'started'.
CREATE FUNCTION agenthost_begin_turn(
    p_sid text, p_tid text, p_message text, p_patch jsonb, p_lease_ms integer,
    p_window integer, p_ttl double precision,
    OUT kind text, OUT fence bigint, OUT message_count integer, OUT created boolean,
    OUT metadata jsonb, OUT history jsonb, OUT turn jsonb, OUT busy_turn_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now double precision := agenthost_now();
    v_row agenthost_sessions;
    v_turn agenthost_turns;
BEGIN
    created := false;
    SELECT * INTO v_row FROM agenthost_sessions WHERE session_id = p_sid FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO agenthost_sessions (session_id, created_at, updated_at, expires_at)
        VALUES (p_sid, v_now, v_now, v_now + p_ttl) ON CONFLICT (session_id) DO NOTHING;
        created := FOUND;
        SELECT * INTO v_row FROM agenthost_sessions WHERE session_id = p_sid FOR UPDATE;
    END IF;
    IF NOT created AND v_row.expires_at <= v_now THEN
        PERFORM agenthost_forget(p_sid);
        UPDATE agenthost_sessions SET created_at = v_now, updated_at = v_now, turns = 0,
            message_count = 0, metadata = '{}', lease_turn_id = NULL, lease_expires_at = 0
        WHERE session_id = p_sid RETURNING * INTO v_row;
        created := true;
    END IF;
    IF NOT created THEN
        SELECT * INTO v_turn FROM agenthost_turns WHERE session_id = p_sid AND turn_id = p_tid;
        IF FOUND AND v_turn.status = 'completed' THEN
            kind := 'completed';
            turn := agenthost_turn_json(v_turn);
            RETURN;
        END IF;
        IF v_row.lease_turn_id IS NOT NULL AND v_row.lease_expires_at > v_now THEN
            kind := 'busy';
            busy_turn_id := v_row.lease_turn_id;
            RETURN;
        END IF;
    END IF;
    kind := 'started';
    fence := v_row.fence + 1;
    message_count := v_row.message_count;
    UPDATE agenthost_sessions SET fence = v_row.fence + 1, lease_turn_id = p_tid,
        lease_fence = v_row.fence + 1, lease_expires_at = v_now + p_lease_ms / 1000.0,
        expires_at = v_now + p_ttl
    WHERE session_id = p_sid;
    INSERT INTO agenthost_turns (session_id, turn_id, status, message, created_at, updated_at)
    VALUES (p_sid, p_tid, 'running', p_message, v_now, v_now)
    ON CONFLICT (session_id, turn_id) DO UPDATE SET status = 'running',
        message = excluded.message, response = NULL, error_code = NULL, error_message = NULL,
        created_at = excluded.created_at, updated_at = excluded.updated_at;
    metadata := v_row.metadata || coalesce(p_patch, '{}');
    history := '[]';
    IF p_window > 0 AND v_row.message_count > 0 THEN
        SELECT coalesce(jsonb_agg(jsonb_build_object('role', role, 'content', content,
            'turn_id', turn_id, 'created_at', created_at, 'seq', seq) ORDER BY seq), '[]')
        INTO history
        FROM (SELECT * FROM agenthost_messages WHERE session_id = p_sid
              AND seq < v_row.message_count ORDER BY seq DESC LIMIT p_window) w;
    END IF;
END $$;

-- If p_tid holds the session's lease with fence p_fence: lock the row and answer whether a
-- waiter asked to be told of its release. NULL if the lease is not ours.
CREATE FUNCTION agenthost_lease_check(p_sid text, p_tid text, p_fence bigint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT release_wanted FROM agenthost_sessions WHERE session_id = p_sid
        AND expires_at > agenthost_now() AND lease_turn_id = p_tid AND lease_fence = p_fence
        AND lease_expires_at > agenthost_now()
    FOR UPDATE
$$;

-- The commit (stores/base.py): fenced; appends both messages and drops the lease in one
-- update of the session row; NULL if the lease is not ours.
CREATE FUNCTION agenthost_commit_turn(
    p_sid text, p_tid text, p_fence bigint,
    p_user text, p_user_at double precision, p_user_seq integer,
    p_answer text, p_answer_at double precision, p_answer_seq integer,
    p_metadata jsonb, p_ttl double precision) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := agenthost_now();
    v_wanted boolean := agenthost_lease_check(p_sid, p_tid, p_fence);
    v_turn agenthost_turns;
BEGIN
    IF v_wanted IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO agenthost_messages (session_id, seq, role, content, turn_id, created_at)
    VALUES (p_sid, p_user_seq, 'user', p_user, p_tid, p_user_at),
           (p_sid, p_answer_seq, 'assistant', p_answer, p_tid, p_answer_at);
    UPDATE agenthost_sessions SET turns = turns + 1, message_count = p_answer_seq + 1,
        metadata = p_metadata, updated_at = v_now, expires_at = v_now + p_ttl,
        lease_turn_id = NULL, lease_expires_at = 0, release_wanted = false
    WHERE session_id = p_sid;
    UPDATE agenthost_turns SET status = 'completed', response = p_answer, error_code = NULL,
        error_message = NULL, updated_at = v_now
    WHERE session_id = p_sid AND turn_id = p_tid RETURNING * INTO v_turn;
    IF v_wanted THEN
        PERFORM pg_notify('agenthost_released', p_sid);
    END IF;
    RETURN agenthost_turn_json(v_turn);
END $$;

CREATE FUNCTION agenthost_fail_turn(
    p_sid text, p_tid text, p_fence bigint, p_code text, p_message text,
    p_ttl double precision) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := agenthost_now();
    v_wanted boolean := agenthost_lease_check(p_sid, p_tid, p_fence);
    v_turn agenthost_turns;
BEGIN
    IF v_wanted IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE agenthost_sessions SET lease_turn_id = NULL, lease_expires_at = 0,
        release_wanted = false, expires_at = v_now + p_ttl
    WHERE session_id = p_sid;
    UPDATE agenthost_turns SET status = 'failed', error_code = p_code,
        error_message = p_message, updated_at = v_now
    WHERE session_id = p_sid AND turn_id = p_tid RETURNING * INTO v_turn;
    IF v_wanted THEN
        PERFORM pg_notify('agenthost_released', p_sid);
    END IF;
    RETURN agenthost_turn_json(v_turn);
END $$;

CREATE FUNCTION agenthost_release_lease(p_sid text, p_tid text, p_fence bigint)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_wanted boolean := agenthost_lease_check(p_sid, p_tid, p_fence);
BEGIN
    IF v_wanted IS NULL THEN
        RETURN false;
    END IF;
    UPDATE agenthost_sessions SET lease_turn_id = NULL, lease_expires_at = 0,
        release_wanted = false
    WHERE session_id = p_sid;
    IF v_wanted THEN
        PERFORM pg_notify('agenthost_released', p_sid);
    END IF;
    RETURN true;
END $$;

-- A waiter's registration: true (and release_wanted set) if the lease is still held.
CREATE FUNCTION agenthost_want_release(p_sid text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := agenthost_now();
BEGIN
    UPDATE agenthost_sessions SET release_wanted = true
    WHERE session_id = p_sid AND lease_turn_id IS NOT NULL AND lease_expires_at > v_now;
    RETURN FOUND;
END $$;

-- The turn record, with 'held' telling whether its lease is live; NULL if none.
CREATE FUNCTION agenthost_get_turn(p_sid text, p_tid text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT agenthost_turn_json(t) || jsonb_build_object('held',
        s.lease_turn_id IS NOT DISTINCT FROM t.turn_id AND s.lease_expires_at > agenthost_now())
    FROM agenthost_sessions s JOIN agenthost_turns t USING (session_id)
    WHERE s.session_id = p_sid AND t.turn_id = p_tid AND s.expires_at > agenthost_now()
$$;

-- Remove up to p_batch sessions past their expiry; how many were removed.
CREATE FUNCTION agenthost_purge(p_batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_sid text;
    v_count integer := 0;
BEGIN
    FOR v_sid IN
        SELECT session_id FROM agenthost_sessions WHERE expires_at <= agenthost_now()
        ORDER BY expires_at LIMIT p_batch FOR UPDATE SKIP LOCKED
    LOOP
        DELETE FROM agenthost_sessions WHERE session_id = v_sid;
        PERFORM agenthost_forget(v_sid);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END $$;
