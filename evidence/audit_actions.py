"""Every action the audit log records, by name: tags shaped source:subject:action.

The service writes only these (api.core.audit.record_event takes an `Action`);
retrieval's truncation check and the auditor's tools read them back by the same
names, so a typo is a NameError at import time, never a check that silently
matches nothing. The values are stored in the log: never change one, add a new one.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    # devices and their evidence
    DEVICE_CREATE = "api:device:create"
    DEVICE_ENROL = "api:device:enrol"
    RECORDING_CREATE = "api:recording:create"
    CONSENT_OBJECTED = "api:consent:objected"
    SEGMENT_UPLOAD = "api:segment:upload"
    RECORDING_INTERRUPTED = "api:recording:interrupted"
    # officers
    EVIDENCE_LIST = "api:evidence:list"
    EVIDENCE_SHOW = "api:evidence:show"
    EVIDENCE_READ = "api:evidence:read"
    EVIDENCE_READ_SEALED = "api:evidence:read-sealed"  # a read as ciphertext, opened by the officer's offline key
    EVIDENCE_INTEGRITY = "api:evidence:integrity"
    EVIDENCE_NO_AUDIO = "api:evidence:no-audio"  # a read of a verified recording that holds no audio (not a failure)
    EVIDENCE_CUSTODY = "api:evidence:custody"
    EVIDENCE_EXPORT = "api:evidence:export"  # an officer asked for a bundle (logged before anything is read)
    EVIDENCE_EXPORTED = "api:evidence:exported"  # the bundle that left: SHA-256 of its signed SHA256SUMS
    RECORDING_FLAG = "api:recording:flag"
    RECORDING_EXTEND = "api:recording:extend"
    RECORDING_DELETE = "api:recording:delete"  # an early deletion carried out (or refused)
    DELETION_REQUEST = "api:deletion:request"
    DELETION_APPROVE = "api:deletion:approve"
    DELETION_CANCEL = "api:deletion:cancel"
    HOLD_CREATE = "api:hold:create"
    HOLD_RELEASE = "api:hold:release"
    # administrators
    SITE_CREATE = "api:site:create"
    USER_CREATE = "api:user:create"
    USER_DISABLE = "api:user:disable"
    USER_ENABLE = "api:user:enable"
    USER_APPROVE = "api:user:approve"  # a second person confirmed an officer's or auditor's access
    DEVICE_DISABLE = "api:device:disable"
    DEVICE_ENABLE = "api:device:enable"
    TOKEN_ROTATE = "api:token:rotate"  # a user or a device replaced its own token
    ADMIN_RESET = "cli:admin:reset"  # a lost admin token replaced on the server itself
    NOTICE_ADD = "api:notice:add"  # a new version of a notice text (earlier versions are never changed)
    NOTICE_AUDIO_SET = "api:notice:audio"  # a notice version's spoken reading uploaded or generated
    POLICY_SET = "api:policy:set"
    POLICY_CLEAR = "api:policy:clear"
    SERVER_INIT = "cli:server:init"
    # auditors
    AUDIT_READ = "api:audit:read"
    AUDIT_EXPORT = "api:audit:export"
    # the web console (api/console)
    CONSOLE_LOGIN_SET = "cli:console:login-set"  # a user's console password and TOTP secret (re)provisioned
    # an administrator gave an officer or auditor a new console sign-in: a second person approves it again
    CONSOLE_LOGIN_AWAITS_APPROVAL = "console:login:awaits-approval"
    CONSOLE_SIGN_IN = "console:session:sign-in"  # allowed, or denied (wrong password/code, replay, locked)
    CONSOLE_LOCKED = "console:account:locked"  # too many failures in a row: refused for a while
    CONSOLE_SIGN_OUT = "console:session:sign-out"
    CONSOLE_NOTE_ADD = "console:note:add"  # an officer's note on a recording (its id and length, never its text)
    CONSOLE_AUDIT_EXPORT = "console:audit:export"  # an auditor downloaded filtered log rows as CSV (the filters)
    # anyone refused
    ACCESS_DENIED = "api:access:denied"
    ACCESS_DENIED_SUMMARY = "api:access:denied-summary"  # failures past the rate, counted (api.core.throttle)
    # the retention job
    RECORDING_SHRED = "retention:recording:shred"
    RECORDING_PURGE = "retention:recording:purge"
    RETENTION_RUN = "retention:run:complete"
    # evidence key custody (`countersign keys ...`, on the server's data directory)
    KEY_ROTATE = "keys:evidence:rotate"  # a new current evidence key; the old one became previous
    KEY_RETIRE = "keys:evidence:retire"  # no longer sealed to nor accepted alone; still read until destroyed
    KEY_REWRAP = "keys:evidence:rewrap"  # one committed batch of data keys resealed to the current key (or the run)
    KEY_DROP_SEALED = "keys:evidence:drop-sealed"  # rewrapped recordings' data keys sealed to retired keys deleted
    KEY_DESTROY = "keys:evidence:destroy"  # a retired key's sealed data keys and private key file removed
    KEY_PASSPHRASE = "keys:passphrase:change"  # every key file re-encrypted under a new passphrase
    KEY_OFFLINE_ADD = "keys:offline:add"  # an offline recovery key registered: devices seal to it too
    KEY_RECOVERY_IMPORT = "keys:recovery:import"  # a signed record of a recording read offline, without the service
    # help alerts (api/alerts): staff never alone
    ALERT_RAISE = "api:alert:raise"  # a device called for help (or flagged an incident with alerts on)
    ALERT_ACK = "api:alert:ack"  # a supervisor of the site answered ("Sato is coming")
    ALERT_ESCALATE = "alerts:alert:escalate"  # nobody answered in time: the next tier was notified
    ALERT_DELIVERED = "alerts:delivery:sent"  # one e-mail or webhook accepted by its receiver
    ALERT_DELIVERY_FAILED = "alerts:delivery:failed"  # given up after the last retry
    DEVICE_HEALTH = "alerts:device:health"  # a device silent, its clock off, or its spool filling: contacts told
    ALERTING_SET = "api:alerting:set"  # a site's alerting settings changed
    ALERT_CONTACT_ADD = "api:alert-contact:add"
    ALERT_CONTACT_REMOVE = "api:alert-contact:remove"
