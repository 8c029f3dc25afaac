-- Section 125 / IRC 79, derived per member-month from the coverage and the rate table: the post-tax
-- part of the employee's deductions and the month's imputed income (NULL while a rate or age is unknown).
ALTER TABLE member_month ADD COLUMN IF NOT EXISTS post_tax_cents bigint;
ALTER TABLE member_month ADD COLUMN IF NOT EXISTS imputed_income_cents bigint;
