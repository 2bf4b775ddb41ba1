DROP INDEX repositories_forked_from;
ALTER TABLE repositories DROP COLUMN private_lineage, DROP COLUMN forked_from;
