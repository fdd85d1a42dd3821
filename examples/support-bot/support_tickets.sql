-- The support tickets of the support-bot example: 400 tickets in table support_tickets of the
-- database the connection points at (database `test` of the machine's PostgreSQL):
--   psql -h 127.0.0.1 -U postgres -d test -f examples/support-bot/support_tickets.sql
-- Safe to run again: the table is created if absent, rows already there are left as they are.
-- The tickets are made up, deterministically, from the lists below (no real customer data).

CREATE TABLE IF NOT EXISTS support_tickets (
    id          integer PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    product     text NOT NULL,
    priority    text NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL,
    resolution  text,            -- NULL while the ticket is open
    satisfaction smallint        -- 1..5 once closed, NULL when the customer did not answer
);

INSERT INTO support_tickets (id, created_at, product, priority, subject, body, resolution, satisfaction)
SELECT
    i,
    timestamptz '2026-01-05 08:00:00+00' + i * interval '97 minutes',
    p.product,
    (ARRAY['low', 'normal', 'normal', 'high', 'urgent'])[1 + (i * 7 + i / 9) % 5],
    format('%s%s %s', upper(left(p.product, 1)), substr(p.product, 2), s.symptom),
    format(
        'Hello, since %s the %s %s. %s I already tried %s, without success. %s',
        (ARRAY['this morning', 'yesterday', 'the last update', 'Monday', 'we moved offices'])[1 + (i / 8) % 5],
        p.product,
        s.symptom,
        (ARRAY['It happens on every machine of the team.', 'Only my account seems affected.',
               'The error message says "access denied".', 'It worked fine last week.',
               'This blocks our month-end closing.'])[1 + (i / 3) % 5],
        (ARRAY['restarting it', 'logging out and in again', 'clearing the cache',
               'reinstalling the client', 'another network'])[1 + (i / 40) % 5],
        (ARRAY['Thanks for your help.', 'Please call me back.', 'Kind regards.',
               'Can you look at it today?', 'Best, the accounting team.'])[1 + (i * 3 + i / 13) % 5]
    ),
    CASE WHEN i % 6 = 0 THEN NULL ELSE format(
        '%s The customer confirmed the %s works again.',
        (ARRAY['Updated the driver to the current version.', 'Reset the password and the second factor.',
               'Renewed the expired certificate.', 'Cleared the local profile and synchronised it again.',
               'Escalated to the network team, who reopened the firewall port.'])[1 + (i / 7 + i) % 5],
        p.product
    ) END,
    CASE WHEN i % 6 = 0 OR i % 7 = 0 THEN NULL ELSE 1 + (i * 23) % 5 END
FROM generate_series(1, 400) AS i
CROSS JOIN LATERAL (
    SELECT (ARRAY['printer', 'laptop', 'vpn client', 'mail server', 'billing portal',
                  'phone app', 'scanner', 'shared drive'])[1 + i % 8] AS product
) AS p
CROSS JOIN LATERAL (
    SELECT (ARRAY['does not start', 'is very slow', 'keeps disconnecting', 'shows an error at login',
                  'lost my settings', 'cannot be reached from home', 'prints blank pages',
                  'rejects my password'])[1 + (i / 8 + i * 3) % 8] AS symptom
) AS s
ON CONFLICT (id) DO NOTHING;
