-- The built-in graph writes every link with an identifier id it took from
-- identity_graph_identifiers in the same transaction (the id its own insert
-- returned, or a lookup of a committed row; a lookup that finds nothing
-- inserts NULL and fails the chunk), and nothing deletes identifiers. The
-- foreign key re-checked each link row with a SELECT … FOR KEY SHARE on its
-- identifier, which also locked and dirtied every identifier row a chunk
-- touched. Without it, the graph's chunk writes measured 23–30% more users
-- a second (ARCHITECTURE.md, "The built-in graph").
ALTER TABLE identity_graph_links DROP CONSTRAINT IF EXISTS identity_graph_links_identifier_id_fkey;
