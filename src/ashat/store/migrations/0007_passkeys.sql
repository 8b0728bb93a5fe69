-- Passkeys (WebAuthn) registered by users of the dashboard: the public key only (the line a
-- root of trust names: webauthn ALG RP_ID SPKI) and the credential id the browser asks for.
-- A passkey approves only once a root key holder has added its line to root's approvers.
CREATE TABLE passkeys (
    credential_id  TEXT PRIMARY KEY,
    user_name      TEXT NOT NULL,
    keyid          TEXT NOT NULL,
    public         TEXT NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX passkeys_user ON passkeys (user_name);
