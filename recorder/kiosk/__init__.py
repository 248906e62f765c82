"""The counter kiosk: `countersign recorder serve`, a long-running agent with a local web page.

agent.py holds the state machine (idle -> notice -> recording -> stopped), readiness.py the
checks that gate Start, sync.py the background upload, alerts.py help alerts, web.py the
standard-library HTTP server and its guards, static/ every asset the page loads.
"""
