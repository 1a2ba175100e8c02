-- A turn keeps the fingerprint of the request it was started with (message and metadata),
-- so a turn id sent again with another request is refused (the IETF idempotency-key draft).
ALTER TABLE agenthost_turns ADD COLUMN fingerprint text NOT NULL DEFAULT '';

CREATE OR REPLACE FUNCTION agenthost_turn_json(t agenthost_turns) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'status', t.status, 'message', t.message, 'response', t.response,
        'error_code', t.error_code, 'error_message', t.error_message,
        'created_at', t.created_at, 'updated_at', t.updated_at,
        'fingerprint', t.fingerprint)
$$;

-- begin_turn with a fingerprint, in the same single statement: the session's row is locked
-- first (as begin_turn itself does), so the check and the recording cannot interleave with
-- another begin of the same session. kind 'reused': the turn id is recorded with another
-- request; nothing changed.
CREATE FUNCTION agenthost_begin_turn_fp(
    p_sid text, p_tid text, p_message text, p_patch jsonb, p_lease_ms integer,
    p_window integer, p_ttl double precision, p_fingerprint text,
    OUT kind text, OUT fence bigint, OUT message_count integer, OUT created boolean,
    OUT metadata jsonb, OUT history jsonb, OUT turn jsonb, OUT busy_turn_id text)
LANGUAGE plpgsql AS $$
DECLARE
    v_recorded text;
BEGIN
    PERFORM 1 FROM agenthost_sessions WHERE session_id = p_sid FOR UPDATE;
    IF p_fingerprint <> '' THEN
        SELECT t.fingerprint INTO v_recorded FROM agenthost_turns t
        WHERE t.session_id = p_sid AND t.turn_id = p_tid;
        IF v_recorded IS NOT NULL AND v_recorded <> '' AND v_recorded <> p_fingerprint THEN
            kind := 'reused';
            RETURN;
        END IF;
    END IF;
    SELECT b.kind, b.fence, b.message_count, b.created, b.metadata, b.history, b.turn,
           b.busy_turn_id
      INTO kind, fence, message_count, created, metadata, history, turn, busy_turn_id
      FROM agenthost_begin_turn(p_sid, p_tid, p_message, p_patch, p_lease_ms, p_window, p_ttl)
           AS b;
    IF kind = 'started' AND p_fingerprint <> '' THEN
        UPDATE agenthost_turns t SET fingerprint = p_fingerprint
        WHERE t.session_id = p_sid AND t.turn_id = p_tid;
    END IF;
END
$$;
