-- The expected premium of a member-month split into the employee's share and the employer's
-- contribution (NULL while a rate is unknown).
ALTER TABLE member_month ADD COLUMN IF NOT EXISTS employee_share_cents bigint;
ALTER TABLE member_month ADD COLUMN IF NOT EXISTS employer_share_cents bigint;
