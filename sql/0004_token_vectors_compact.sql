-- Token vectors for MaxSim rerank in a compact format (appliance/db/token_codec.py): at most
-- 8 kB per chunk (merged near-duplicate tokens, a centre and one sign bit per dimension)
-- instead of ~77 kB of int8 for a 200-token chunk of a 384-dim model. Existing rows are
-- format 1 (int8); `appliance migrate` converts them after this file (token_codec.convert),
-- and until then the store reads only format-2 rows (a chunk without one is encoded live).
ALTER TABLE chunk_token_vectors ADD COLUMN format smallint NOT NULL DEFAULT 1;
