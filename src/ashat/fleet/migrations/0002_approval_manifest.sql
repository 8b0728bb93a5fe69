-- The doubly signed manifest, so that every replica serves it (before: a file in
-- DIR/approved/, still read for approvals recorded then).
ALTER TABLE approvals ADD COLUMN manifest TEXT;
