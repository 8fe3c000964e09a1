-- Research runs, their calls (with each call's final receipt) and their progress events.
-- A run's API key is never stored; runs interrupted by a restart are failed at start-up.
CREATE TABLE researcher.runs (
    id               text PRIMARY KEY,
    account_id       text NOT NULL,
    topic            text NOT NULL,
    tickers          text[] NOT NULL,
    mode             text NOT NULL,
    models           jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN
                         ('running', 'completed', 'stopped', 'cancelled', 'failed')),
    stage            text NOT NULL,
    estimate         jsonb NOT NULL,
    envelope         jsonb NOT NULL,
    task_id          text NOT NULL,
    error            text,
    cancel_requested boolean NOT NULL DEFAULT false,
    ledger_task      jsonb,
    report_md        text,
    report_pdf       bytea,
    chart_png        bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX runs_by_account ON researcher.runs (account_id, created_at DESC);

CREATE TABLE researcher.calls (
    run_id      text NOT NULL REFERENCES researcher.runs (id),
    idx         int NOT NULL,
    section     text NOT NULL,
    step        text NOT NULL,
    model       text NOT NULL,
    request_id  text,
    http_status int NOT NULL,
    error       text,
    content     text NOT NULL DEFAULT '',
    receipt     jsonb,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE researcher.events (
    run_id text NOT NULL REFERENCES researcher.runs (id),
    seq    int NOT NULL,
    type   text NOT NULL,
    data   jsonb NOT NULL,
    at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
