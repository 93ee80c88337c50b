-- Update Kleer Agreement, exactly once per callbackId.
--
-- An update is a POST that makes a new agreement revision. If it reached Kleer
-- but the call stopped before it recorded that (the answer lost, the database
-- gone for a moment, the worker killed), a retry must not send it again: that
-- would make a second revision. Before the update is sent, the call records the
-- agreement's revision number as it was (with kleer_pending, as creates do);
-- a retry that finds the agreement past that revision knows the update landed.
ALTER TABLE workflow_actions ADD COLUMN IF NOT EXISTS kleer_revision_before integer;
