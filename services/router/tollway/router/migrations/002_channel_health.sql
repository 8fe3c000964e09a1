-- Each channel's circuit as this router fleet last saw it, and every transition (for the admin
-- API and the dashboard). Written by routers when a circuit moves; never read on the hot path.
CREATE TABLE router.channel_health (
    channel_id text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    reason text NOT NULL,
    error_rate double precision NOT NULL,
    samples int NOT NULL,
    p50_latency_ms int NOT NULL,
    router_id text NOT NULL,
    changed_at timestamptz NOT NULL
);

CREATE TABLE router.channel_health_events (
    event_id text PRIMARY KEY,
    channel_id text NOT NULL,
    from_state text NOT NULL,
    to_state text NOT NULL,
    reason text NOT NULL,
    error_rate double precision NOT NULL,
    router_id text NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX channel_health_events_by_channel
    ON router.channel_health_events (channel_id, occurred_at DESC);

-- Audit trail of operator changes to the route tree (secrets redacted before they get here).
CREATE TABLE router.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    subject text NOT NULL,
    before jsonb,
    after jsonb
);
CREATE FUNCTION router.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'router.audit is append-only';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON router.audit
    FOR EACH ROW EXECUTE FUNCTION router.refuse_audit_change();
