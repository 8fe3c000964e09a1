-- Which account owns a task, recorded when the edge accepts POST /v1/tasks (before the ledger has
-- applied it), so ownership checks never depend on the ledger's lag.
CREATE TABLE edge.tasks (
    id text PRIMARY KEY,
    account_id text NOT NULL REFERENCES edge.accounts (id),
    project_id text NOT NULL,
    key_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_account ON edge.tasks (account_id, created_at);
