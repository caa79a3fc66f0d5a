-- 0006: what a pending question needs besides its text to be answered the same way by whichever
-- process takes it over:
-- `attachments`: the files attached to it (`/zunda image:` and `file:`) as Discord described them
-- (kind, filename, URL, declared type and size; JSON, empty for none), fetched again on a takeover;
-- the content is never stored;
-- `places`: where it was asked, most specific first (thread, channel, category, guild; ids joined
-- by commas), so a process that never saw the interaction picks the same place settings.
ALTER TABLE pending_questions ADD COLUMN IF NOT EXISTS attachments TEXT NOT NULL DEFAULT '';
ALTER TABLE pending_questions ADD COLUMN IF NOT EXISTS places TEXT NOT NULL DEFAULT '';
