-- The limits service's schema; its tables arrive with its own migrations.
CREATE SCHEMA IF NOT EXISTS limits;
