-- API keys, the per-key counters every gateway worker and replica shares, and the audit trail
-- (appliance/access/, docs/access.md). No secret is stored: keys by their SHA-256 only.

CREATE TABLE api_keys (
    name          text PRIMARY KEY,
    sha256        text        NOT NULL UNIQUE,
    shown         text        NOT NULL,            -- the key's first characters, for `keys list`
    models        text[]      NOT NULL DEFAULT '{}',
    workspaces    text[]      NOT NULL DEFAULT '{}',
    rpm           integer CHECK (rpm > 0),
    tpm           integer CHECK (tpm > 0),
    budget_usd    double precision CHECK (budget_usd > 0),
    period        text        NOT NULL DEFAULT 'month' CHECK (period IN ('day', 'month')),
    expires_at    timestamptz,
    admin         boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rotated_at    timestamptz,
    revoked_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()   -- what workers poll for changes
);

-- Requests and tokens per key and minute (unix minute), summed from every worker's deltas.
CREATE TABLE key_usage_windows (
    key_name  text    NOT NULL,
    minute    bigint  NOT NULL,
    requests  bigint  NOT NULL DEFAULT 0,
    tokens    bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (key_name, minute)
);

-- Spend per key and budget period ('2026-12-01' for a day, '2026-12' for a month, UTC).
CREATE TABLE key_spend (
    key_name  text             NOT NULL,
    period    text             NOT NULL,
    spend_usd double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (key_name, period)
);

CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    ts             timestamptz NOT NULL DEFAULT now(),
    event          text        NOT NULL,     -- key.created | key.revoked | key.rotated | admin.call | denied
    key_name       text,
    actor          text,                     -- an admin key's name, or 'cli'
    status         integer,
    method         text,
    path           text,
    correlation_id text,
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_key ON audit_log (key_name, ts);
