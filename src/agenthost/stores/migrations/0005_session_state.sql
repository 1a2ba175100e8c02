-- A session keeps its agent's state (a hosted framework's checkpoint or message history,
-- opaque bytes) beside its metadata: handed out by begin_turn, replaced only by a commit
-- that carries one, gone with the session (forget runs when an expired session is reused).
ALTER TABLE agenthost_sessions ADD COLUMN state bytea;

CREATE OR REPLACE FUNCTION agenthost_forget(p_sid text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM agenthost_messages WHERE session_id = p_sid;
    DELETE FROM agenthost_turns WHERE session_id = p_sid;
    UPDATE agenthost_sessions SET state = NULL WHERE session_id = p_sid;
$$;

-- begin_turn_since, and the session's state when the turn started: one statement still.
CREATE FUNCTION agenthost_begin_turn_state(
    p_sid text, p_tid text, p_message text, p_patch jsonb, p_lease_ms integer,
    p_window integer, p_ttl double precision, p_fingerprint text,
    p_known_created double precision, p_known_count integer,
    OUT kind text, OUT fence bigint, OUT message_count integer, OUT created boolean,
    OUT metadata jsonb, OUT history jsonb, OUT turn jsonb, OUT busy_turn_id text,
    OUT created_at double precision, OUT delta boolean, OUT state bytea)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    SELECT b.kind, b.fence, b.message_count, b.created, b.metadata, b.history, b.turn,
           b.busy_turn_id, b.created_at, b.delta
      INTO kind, fence, message_count, created, metadata, history, turn, busy_turn_id,
           created_at, delta
      FROM agenthost_begin_turn_since(p_sid, p_tid, p_message, p_patch, p_lease_ms,
                                      p_window, p_ttl, p_fingerprint, p_known_created,
                                      p_known_count) AS b;
    IF kind = 'started' THEN
        SELECT s.state INTO state FROM agenthost_sessions s WHERE s.session_id = p_sid;
    END IF;
END
$$;

-- commit_turn, replacing the session's state in the same transaction when p_state is given
-- (NULL keeps it); NULL (nothing written) if the lease is not ours.
CREATE FUNCTION agenthost_commit_turn_state(
    p_sid text, p_tid text, p_fence bigint,
    p_user text, p_user_at double precision, p_user_seq integer,
    p_answer text, p_answer_at double precision, p_answer_seq integer,
    p_metadata jsonb, p_ttl double precision, p_state bytea) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_turn jsonb := agenthost_commit_turn(p_sid, p_tid, p_fence, p_user, p_user_at,
        p_user_seq, p_answer, p_answer_at, p_answer_seq, p_metadata, p_ttl);
BEGIN
    IF v_turn IS NOT NULL AND p_state IS NOT NULL THEN
        UPDATE agenthost_sessions SET state = p_state WHERE session_id = p_sid;
    END IF;
    RETURN v_turn;
END $$;
