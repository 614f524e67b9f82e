-- Stored responses belong to the API key that created them: GET / DELETE / input_items and
-- previous_response_id find only the caller's own (docs/responses.md, "Who sees a response").
-- owner: the key's name; '' for the anonymous caller of a gateway without keys. Rows stored
-- before this migration are the anonymous caller's. A key's name is the owner, so a rotated
-- key keeps its responses, and a revoked key's name used again gets them.

ALTER TABLE api_responses ADD COLUMN owner text NOT NULL DEFAULT '';
