-- Stored Responses (POST /v1/responses with store: true, the default), written by the gateway
-- itself before the create answers, so GET /v1/responses/{id} and a continuation through
-- previous_response_id find it at once, from any worker or replica.
-- input_items: this request's own input, each item with its id (what /input_items lists).
-- response: the response object as returned, its output included. A continuation's context is
-- the chain through previous_response_id (no foreign key: deleting one response must neither
-- cascade to nor be blocked by the ones that continued it; the chain then starts after it).

CREATE TABLE api_responses (
    id                   text        PRIMARY KEY,
    created_at           timestamptz NOT NULL DEFAULT now(),
    correlation_id       text        NOT NULL,
    model                text        NOT NULL,
    status               text        NOT NULL,
    previous_response_id text,
    input_items          jsonb       NOT NULL,
    response             jsonb       NOT NULL
);
CREATE INDEX api_responses_created ON api_responses (created_at);
CREATE INDEX api_responses_correlation ON api_responses (correlation_id);
