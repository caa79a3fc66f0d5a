-- 0003: pending questions keep the order they were accepted in, and the follow-up messages a
-- streamed answer has posted.
--
-- A question is recorded concurrently with its acknowledgement, so two questions accepted one
-- after the other can be inserted in either order and `seq` is not their acceptance order.
-- `accepted` is stamped when the question's place in its channel was fixed (unix microseconds,
-- strictly increasing within a process); rows written before this migration have none and sort
-- first, by `seq`.
ALTER TABLE pending_questions ADD COLUMN accepted BIGINT;

-- The ids (comma-separated) of the follow-up messages a streamed answer has posted so far: a
-- process that dies mid-stream leaves them for the next one, which edits them into the final
-- answer instead of posting the same parts again.
ALTER TABLE pending_questions ADD COLUMN follow_ups TEXT NOT NULL DEFAULT '';
