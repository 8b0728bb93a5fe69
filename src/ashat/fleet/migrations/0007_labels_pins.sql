-- Targeting (issue 19, ashat/labels.py). Labels the control side set on OMEGA
-- (ashat fleet label): one row per mainframe and key, kept for a mainframe not seen yet.
CREATE TABLE IF NOT EXISTS mainframe_labels (
    mainframe_id TEXT NOT NULL,
    label        TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (mainframe_id, label)
);
-- What the mainframe's last poll told of it: its license's labels and its inventory (os,
-- arch, python, ashat, free disk), as JSON.
ALTER TABLE mainframes ADD COLUMN facts TEXT;
-- A mainframe held on one release (ashat fleet pin): no rollout of another release takes it.
CREATE TABLE IF NOT EXISTS mainframe_pins (
    mainframe_id TEXT PRIMARY KEY,
    update_id    TEXT NOT NULL,
    pinned_at    TEXT NOT NULL
);
-- The selector a rollout was started with (deploy approve --to, [distribution] to); NULL:
-- every licensed mainframe of its channel.
ALTER TABLE rollouts ADD COLUMN selector TEXT;
-- Rings ([distribution] rings): each selector's mainframes are one leading wave of the
-- rollout, in order, before its percentage waves take the rest (JSON list; NULL: none).
ALTER TABLE rollouts ADD COLUMN rings TEXT;
-- Bumped with every change of labels or pins: each replica reloads them (at its tick) when
-- it changed, and a poll reads them from memory.
CREATE TABLE IF NOT EXISTS fleet_rules (
    id      INTEGER PRIMARY KEY,
    version BIGINT NOT NULL
);
