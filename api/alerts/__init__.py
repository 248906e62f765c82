"""Help alerts: staff never alone (docs/alerts.md).

A device raises an alert; the service notifies the site's contacts through a transactional
outbox (e-mail, signed webhook), escalates to the next tier when nobody acknowledges in time,
streams changes to officers, and watches devices' check-ins.
"""
