-- An approval signed by the approver's own key (a root of trust in the project): the whole
-- approval statement as canonical JSON, carried to OMEGA and every mainframe, which check
-- it themselves. NULL for approvals recorded without a root of trust.
ALTER TABLE approvals ADD COLUMN statement TEXT;
