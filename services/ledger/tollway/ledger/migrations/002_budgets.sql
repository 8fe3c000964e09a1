-- Budgets, task envelopes and multi-bucket holds. All of it is projection state folded from
-- gw.requests and gw.usage in partition order, so replay reproduces every limit decision.

-- A request may hold in several buckets (one hold per bucket of its plan).
ALTER TABLE ledger.holds DROP CONSTRAINT holds_request_id_key;
CREATE INDEX holds_request ON ledger.holds (request_id);

-- Budget definitions (BudgetSet / BudgetRemoved); a task's envelope is one row per bucket.
CREATE TABLE ledger.budgets (
    budget_id text PRIMARY KEY,
    account_id text NOT NULL,
    name text NOT NULL,
    scope text NOT NULL,
    scope_id text NOT NULL,
    time_window text NOT NULL,
    timezone text NOT NULL,
    unit text NOT NULL,
    bucket text,
    amount bigint NOT NULL CHECK (amount > 0),
    mode text NOT NULL CHECK (mode IN ('hard', 'soft')),
    set_at timestamptz NOT NULL
);
CREATE INDEX budgets_account ON ledger.budgets (account_id);

-- What each hold counts against each budget it matched: ``held`` while the hold is open,
-- ``spent`` once settled (0 when released). ``at`` is the request's event time: windows are
-- evaluated against it, never against the wall clock. ``channels``: the hold's candidates the
-- budget covers, so a settlement counts only when one of them served.
CREATE TABLE ledger.budget_usage (
    budget_id text NOT NULL,
    hold_id text NOT NULL,
    request_id text NOT NULL,
    at timestamptz NOT NULL,
    held bigint NOT NULL CHECK (held >= 0),
    spent bigint NOT NULL CHECK (spent >= 0),
    channels text[] NOT NULL,
    PRIMARY KEY (budget_id, hold_id)
);
CREATE INDEX budget_usage_window ON ledger.budget_usage (budget_id, at);
CREATE INDEX budget_usage_request ON ledger.budget_usage (request_id);

-- Task envelopes (TaskOpened / TaskClosed).
CREATE TABLE ledger.tasks (
    task_id text PRIMARY KEY,
    account_id text NOT NULL,
    project_id text NOT NULL,
    key_id text NOT NULL,
    name text NOT NULL,
    route_types text[] NOT NULL,
    fallback text NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'closed')),
    opened_at timestamptz NOT NULL,
    closed_at timestamptz,
    close_reason text,
    stopped_by text
);
