-- What a mainframe said at its last poll about switching now (fleet/windows.py): NULL
-- (it may), 'window' (outside its maintenance window) or 'lock' (its app holds an update
-- lock). A held mainframe gets no directive, and its rollout waits for it without failing it.
ALTER TABLE mainframes ADD COLUMN hold TEXT;
-- When a held mainframe last polled free (epoch seconds): from then on its wave's timeout
-- counts for it afresh (it may take as long to install as any other).
ALTER TABLE mainframes ADD COLUMN hold_released_at DOUBLE PRECISION;
