-- The admin API: key metadata, listing indexes, and one audit trail of every operator change.
ALTER TABLE edge.api_keys ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX api_keys_by_account ON edge.api_keys (account_id, created_at DESC, id DESC);
CREATE INDEX api_keys_by_project ON edge.api_keys (project_id, created_at DESC, id DESC);
CREATE INDEX accounts_by_created ON edge.accounts (created_at DESC, id DESC);

-- Every admin mutation (accounts, projects, keys, top-ups, budgets, breaker resets, velocity
-- limits, webhooks, ledger corrections, channels, models, routes), written in the transaction of
-- the change it records, or once the event log confirmed the command the edge published. It never
-- holds a secret. ``kind`` is the action's first part (``key`` of ``key.revoke``).
CREATE TABLE edge.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    kind text GENERATED ALWAYS AS (split_part(action, '.', 1)) STORED,
    target text NOT NULL,
    account_id text,
    before jsonb,
    after jsonb
);
CREATE INDEX audit_by_kind ON edge.audit (kind, id DESC);
CREATE INDEX audit_by_target ON edge.audit (target, id DESC);
CREATE INDEX audit_by_account ON edge.audit (account_id, id DESC) WHERE account_id IS NOT NULL;

CREATE FUNCTION edge.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'edge.audit is append-only';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON edge.audit
    FOR EACH ROW EXECUTE FUNCTION edge.refuse_audit_change();

-- The route tree's audit used to live in router.audit, which only the edge ever wrote. Its rows
-- move here with their ids (RouteTreeChanged.audit_id keeps pointing at the same change); the old
-- table is left to its owner's migrations and is no longer written.
DO $$
BEGIN
    IF to_regclass('router.audit') IS NOT NULL THEN
        INSERT INTO edge.audit (id, at, actor, action, target, before, after)
        SELECT id, at, actor, action, subject, before, after FROM router.audit ORDER BY id;
        IF EXISTS (SELECT 1 FROM edge.audit) THEN
            PERFORM setval(pg_get_serial_sequence('edge.audit', 'id'),
                           (SELECT max(id) FROM edge.audit));
        END IF;
        COMMENT ON TABLE router.audit IS 'Superseded by edge.audit (rows copied there); not written.';
    END IF;
END $$;
