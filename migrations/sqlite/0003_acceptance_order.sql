-- 0003: pending questions keep the order they were accepted in.
--
-- A question is recorded concurrently with its acknowledgement, so two questions accepted one
-- after the other can be inserted in either order and `seq` is not their acceptance order.
-- `accepted` is stamped when the question's place in its channel was fixed (unix microseconds,
-- strictly increasing within a process); rows written before this migration have none and sort
-- first, by `seq`.
ALTER TABLE pending_questions ADD COLUMN accepted INTEGER;
