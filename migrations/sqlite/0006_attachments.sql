-- 0006: the files attached to a pending question (`/zunda image:` and `file:`), as Discord
-- described them (kind, filename, URL, declared type and size; JSON, empty for none), so a process
-- that takes the question over fetches them again. The content is never stored.
ALTER TABLE pending_questions ADD COLUMN attachments TEXT NOT NULL DEFAULT '';
