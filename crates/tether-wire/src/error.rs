//! The error catalog: every failure a user can meet has a stable code, a
//! one-line problem and a one-line action. `docs/errors.md` is generated from
//! [`ErrorCode::ALL`] (`tether errors --markdown`), never written by hand.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

macro_rules! catalog {
    ($( $(#[$meta:meta])* $variant:ident = $code:literal, $http:literal, $problem:literal, $action:literal; )*) => {
        /// A stable error code. The string form (`TETHER-E2101`) never changes
        /// meaning once released; retired codes are never reused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$meta])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in catalog order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The stable string form, e.g. `TETHER-E2101`.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => concat!("TETHER-E", $code), )* }
            }

            /// The HTTP status the API answers with when it reports this code.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $http, )* }
            }

            /// What went wrong, in one line.
            pub fn problem(self) -> &'static str {
                match self { $( ErrorCode::$variant => $problem, )* }
            }

            /// What the user should do about it, in one line.
            pub fn action(self) -> &'static str {
                match self { $( ErrorCode::$variant => $action, )* }
            }

            /// Parses the stable string form back into a code.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $( concat!("TETHER-E", $code) => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

catalog! {
    // 1xxx: local configuration and state.
    ConfigInvalid = "1001", 400, "A configuration file could not be read or has invalid content.", "Fix the file named in the message, or remove it to fall back to defaults.";
    StateCorrupt = "1002", 400, "The agent's local state file is corrupt.", "Move the named state file aside; the agent rebuilds it at the next contact (the credential is kept separately).";
    NotEnrolled = "1003", 400, "This agent is not enrolled.", "Run `tether agent enroll --server URL --token TOKEN` first.";
    CredentialFileInsecure = "1004", 400, "A credential file is readable by other users.", "Run `chmod 600` on the named file, or re-enroll to rewrite it.";
    StateDirUnwritable = "1005", 400, "The agent's state or log directory is not writable.", "Run the agent as the service user that owns the directory, or fix its ownership.";
    UserUpdateNotAllowed = "1006", 403, "Policy does not allow a local user to force this action.", "Ask a platform admin to queue the action from the control plane, or to enable it in the policy.";
    ClockSkew = "1007", 400, "This host's clock differs from the server's or from NTP by more than the tolerance.", "Enable time sync (chrony or systemd-timesyncd) and allow UDP 123 to the NTP servers, or set the clock by hand.";
    NtpUnreachable = "1008", 400, "No NTP server answered, so this host's clock cannot be checked against NTP.", "Allow UDP 123 to the NTP servers named in chrony or timesyncd config, or point them at an internal NTP server.";
    DiskNearlyFull = "1009", 400, "The disk holding the agent's state or log directory is nearly full.", "Free space on the named file system, or move the state and log directories to a larger one.";
    ServiceNotRunning = "1010", 400, "The tether-agent service is not running.", "Start it with `systemctl enable --now tether-agent` and read `journalctl -u tether-agent` if it stops again.";
    AgentVersionOutdated = "1011", 400, "This agent is older than the version the server considers current.", "Install the current agent package; enrollment and state are kept across upgrades.";
    ProxyEnvMismatch = "1012", 400, "The shell and the installed service use different proxy settings.", "Set the same HTTPS_PROXY and NO_PROXY in the service unit (`systemctl edit tether-agent`) as in the shell, or set the proxy in the agent config.";
    AgentParentInvalid = "1020", 400, "`tether-agent run --exit-with-parent PID` names a process that is not the agent's parent, or the parent-death signal could not be set.", "Pass the PID of the process that starts the agent (supervisors such as `tether quickstart` do this themselves), or leave the flag out.";

    // 21xx: enrollment tokens.
    TokenUnknown = "2101", 401, "The enrollment token is not known to this server.", "Check that the token was copied whole and belongs to this server; create a new one with `tether token create`.";
    TokenNotYetValid = "2102", 403, "The enrollment token's activation window has not started yet.", "Wait until the token's not-before time, or check this host's clock against the server's.";
    TokenExpired = "2103", 403, "The enrollment token has expired.", "Create a new token with `tether token create --valid-for DURATION`, or check this host's clock.";
    TokenRevoked = "2104", 403, "The enrollment token was revoked by an admin.", "Ask the platform admin for a new token.";
    TokenExhausted = "2105", 403, "The enrollment token has reached its use limit.", "Create a new token, or one with a higher `--max-uses`.";
    TokenKindNotAllowed = "2106", 403, "The enrollment token does not allow this kind of agent.", "Use a token created with the matching `--kind`, or enroll without `--kind`.";

    // 22xx: agent and admin credentials.
    AgentCredentialRejected = "2201", 401, "The server rejected this agent's credential.", "The agent was removed or re-registered elsewhere: re-enroll it with a new token.";
    AgentPendingApproval = "2202", 403, "The agent is enrolled but waits for an admin's approval.", "Ask the platform admin to run `tether agents approve ID`.";
    AdminCredentialRejected = "2203", 401, "The admin credential is missing or was rejected.", "Pass `--admin-token-file`, set TETHER_ADMIN_TOKEN, or run on the server host with its data dir.";
    ServerCaPinMismatch = "2204", 495, "The server's CA does not match the pinned fingerprint.", "Check the `--ca-fingerprint` value against `tether server` output; a mismatch can mean TLS interception.";
    CredentialProbeUnsupported = "2205", 404, "The server has no read-only credential probe (it is older than this agent), so the credential was not tested.", "Upgrade the control plane; the doctor sends no check-in in its place, because a check-in changes what the server records.";
    LastAdminCredential = "2206", 409, "This is the last admin credential that is not revoked; revoking it would lock every admin out.", "Create another first with `tether admin-tokens create --name NAME`, or rotate this one with `tether admin-tokens rotate`.";
    AdminCredentialRevoked = "2207", 401, "The admin credential was revoked.", "Use a current admin credential (`tether admin-tokens list` on a working one); on the server host, deleting admin.token and restarting issues a new bootstrap credential.";
    AdminTokenNameTaken = "2208", 409, "Another admin credential that is not revoked already has this name.", "Choose another name, or rotate the existing credential with `tether admin-tokens rotate NAME`.";

    // 3xxx: the transport path, one code per phase and cause.
    DnsNxDomain = "3001", 502, "The server name does not exist in DNS (NXDOMAIN).", "Check the server URL's spelling and the DNS zone, or add the name to the resolver or /etc/hosts.";
    DnsServFail = "3002", 502, "The DNS server failed to answer for the server name (SERVFAIL).", "Check the resolvers in /etc/resolv.conf and their upstream; try `dig NAME @RESOLVER`.";
    DnsTimeout = "3003", 504, "No DNS answer arrived in time.", "Check that the resolvers in /etc/resolv.conf are reachable (UDP/TCP 53) from this host.";
    DnsNoAddress = "3004", 502, "The server name exists but has no address records.", "Add an A or AAAA record for the name, or fix the server URL.";
    DnsFailed = "3005", 502, "The server name could not be resolved.", "Check /etc/resolv.conf and /etc/hosts; run `tether doctor` for details.";
    DnsDisagreement = "3006", 502, "Resolvers disagree about the server name, or /etc/hosts overrides what DNS answers.", "Remove the stale /etc/hosts entry, or fix the name server that gives the odd answer.";
    ConnectRefused = "3101", 502, "The connection was refused: nothing listens on that address and port.", "Check that the server is running and the URL's port is right.";
    ConnectTimeout = "3102", 504, "The connection timed out: packets are being dropped, usually by a firewall.", "Ask the network team to allow outbound TCP to the address and port named.";
    ConnectUnreachable = "3103", 502, "The network or host is unreachable from here.", "Check this host's routes and default gateway (`ip route`).";
    ConnectFailed = "3104", 502, "The TCP connection failed.", "Run `tether doctor` to see the failing phase in detail.";
    ProxyUnreachable = "3201", 502, "The HTTP proxy could not be reached.", "Check the proxy host and port in the agent config or HTTPS_PROXY.";
    ProxyAuthRequired = "3202", 407, "The proxy demands authentication and no credentials were configured.", "Set the proxy username and password in the agent config (proxy URL user:pass@).";
    ProxyAuthFailed = "3203", 407, "The proxy rejected the configured credentials.", "Check the proxy username and password; the proxy may also not offer Basic authentication.";
    ProxyConnectRefused = "3204", 502, "The proxy refused to open a tunnel to the server.", "Ask the proxy admin to allow CONNECT to the server's host and port.";
    ProxyBadReply = "3205", 502, "The proxy sent a reply that is not valid HTTP.", "Check that the proxy address points to an HTTP proxy, not another service.";
    ProxyTimeout = "3206", 504, "The proxy accepted the connection but did not answer the CONNECT request in time.", "The proxy may be unable to reach the server: ask the proxy admin to check its route to the server's host and port.";
    ProxyNotAProxy = "3207", 502, "The proxy setting points at something that is not an HTTP proxy: a web server answered CONNECT.", "Fix the proxy host and port in the agent config or HTTPS_PROXY so they name the HTTP proxy, not a web server.";
    TlsHandshakeFailed = "3301", 502, "The TLS handshake failed.", "Run `tether doctor` to see the presented chain and the reason.";
    TlsCertExpired = "3302", 502, "The server's certificate has expired, or this host's clock is ahead.", "Renew the server certificate, or fix this host's clock (check NTP).";
    TlsCertNotYetValid = "3303", 502, "The server's certificate is not valid yet, or this host's clock is behind.", "Fix this host's clock (check NTP).";
    TlsHostnameMismatch = "3304", 502, "The server's certificate does not name the host in the server URL.", "Use a server URL whose host is in the certificate, or reissue the certificate.";
    TlsUnknownIssuer = "3305", 502, "The server's certificate was issued by a CA this agent does not trust.", "Pin the server CA with `--ca-fingerprint`, or add a TLS-inspection CA with `extra_ca_file`.";
    TlsRevoked = "3306", 502, "The server's certificate has been revoked.", "Have the server certificate reissued.";
    TlsInspected = "3307", 502, "A TLS-inspecting proxy intercepts the connection: the presented chain is not the platform's.", "Trust the inspection CA with `extra_ca_file` (or pin it), or ask the proxy admin to exempt the server's host from inspection.";
    TlsChainIncomplete = "3308", 502, "The server does not send the intermediate CA that links its certificate to a trusted root.", "Configure the server to send its full chain (leaf and intermediates), or add the missing CA to `extra_ca_file`.";
    RevocationUnreachable = "3309", 502, "The certificate's revocation server (OCSP or CRL) could not be reached.", "Allow plain HTTP (port 80) to the OCSP and CRL URLs named, through the proxy if one is used.";
    RevocationUnknown = "3310", 502, "The certificate's revocation status could not be established.", "Check the OCSP and CRL URLs named; the CA may publish no revocation information for this certificate.";
    TlsSelfSigned = "3311", 502, "The server presents a self-signed certificate: no CA vouches for it.", "Pin it (`--ca-fingerprint` with the fingerprint named), or install a certificate from the platform's CA on the server.";
    TlsWeakCertificate = "3312", 502, "The server's certificate uses a key or a signature hash that is no longer accepted (RSA under 2048 bits, MD5 or SHA-1).", "Reissue the server certificate with an RSA 2048+ or ECDSA P-256+ key, signed with SHA-256 or better.";
    HttpTimeout = "3401", 504, "The server did not answer the HTTP request in time.", "Check the server's load and health (`curl https://SERVER/health`).";
    HttpProtocol = "3402", 502, "The HTTP exchange failed or the reply was malformed.", "Check for a middlebox rewriting traffic; run `tether doctor`.";
    HttpUnexpectedStatus = "3403", 502, "The server answered with an unexpected HTTP status.", "Check the server's logs for the request; the message names the status.";
    HttpNotTether = "3404", 502, "Something other than a Tether server answered (a captive portal or block page?).", "Check the server URL and any proxy or portal between this host and the server.";
    RateLimited = "3405", 429, "The server asked this client to slow down.", "Nothing to do: the agent waits for the Retry-After period and tries again.";
    HttpBackendDown = "3406", 502, "A load balancer or reverse proxy answered in the server's place (502/503/504): the Tether server behind it is down or out of its reach.", "Check that the Tether server runs and that the balancer's backend health checks pass; the path up to the balancer works.";
    HttpGatewayRateLimited = "3407", 429, "A gateway in front of the server answered 429: it asks this client to slow down.", "Wait the number of seconds named (Retry-After) before trying again; if agents keep meeting the limit, ask the gateway's admin to raise it for the agents' path.";
    HttpClientCertRequired = "3408", 400, "A gateway in front of the server demands a TLS client certificate, which agents do not present.", "Ask the gateway's admin to exempt the Tether server's path from client-certificate authentication (agents authenticate with their own credential).";
    TargetProtocolMismatch = "3501", 502, "A target port accepted the connection but did not speak the expected protocol.", "Check that the named service listens on that port, and that no middlebox answers in its place.";

    // 4xxx: API input.
    MalformedJson = "4001", 400, "The request body is not valid JSON for this endpoint.", "Send a body that matches the API schema; the message names the first problem.";
    BodyTooLarge = "4002", 413, "The request body is larger than the server accepts.", "Send a smaller body; the message names the limit.";
    InvalidField = "4003", 422, "A field in the request has an invalid value.", "Fix the named field; the message says what is accepted.";
    NotFound = "4004", 404, "The requested object does not exist.", "Check the ID; list objects with `tether agents list` or `tether token list`.";
    InvalidId = "4005", 400, "An ID in the request is not a valid UUID.", "Pass the full ID as printed by the list commands.";
    UnsupportedMediaType = "4006", 415, "The request body must be JSON.", "Send `Content-Type: application/json`.";
    MethodNotAllowed = "4007", 405, "This endpoint does not accept that HTTP method.", "Check the API documentation for the endpoint.";
    Conflict = "4008", 409, "The request conflicts with the current state of the object.", "Re-read the object and retry with the current state.";
    BundleInvalid = "4009", 422, "The uploaded escalation bundle is not a valid gzip-compressed Tether bundle.", "Upload the file `tether agent bundle` wrote, unchanged, with `Content-Type: application/gzip`.";
    ChannelInvalid = "4010", 422, "The definitions channel name is not valid.", "Use 1-64 characters: lowercase letters, digits, '-', '_' and '.', starting with a letter or digit.";
    DefsEmpty = "4011", 422, "The published definitions file is empty.", "Publish the definitions file itself, not an empty or truncated copy.";
    BundleNotOwned = "4012", 422, "A doctor summary names an escalation bundle that this agent did not upload.", "Report only the ID of a bundle this agent uploaded (from its upload reply), or none.";
    InvalidCursor = "4013", 400, "The paging cursor is not one this server hands out.", "Start the listing again without `after`, then follow the `tether-next-cursor` header.";
    /// Never sent: what a code from a newer peer's catalog reads as here.
    UnknownPeerCode = "4014", 502, "A peer reported an error code that this version's catalog does not have (the peer is newer).", "Read the message, which starts with the peer's own code; upgrade this side to get that code's catalog entry and action.";

    // 6xxx: definitions (signed update channels) on the agent.
    DefsSignatureInvalid = "6001", 502, "The definitions metadata is not signed by the trusted keys.", "Check that the update server serves this control plane's repository (a mirror made with `tether defs mirror`); if the keys were rotated, re-enroll the agent.";
    DefsMetadataExpired = "6002", 502, "The update server's signed metadata has expired: it is frozen or a stale mirror.", "Refresh the mirror from the control plane (`tether defs mirror --to DIR`), or check this host's clock.";
    DefsRollbackRefused = "6003", 502, "The update server offered older metadata or definitions than this agent already trusts.", "Point the agent at a current mirror; an older copy is refused by design.";
    DefsDeltaFailed = "6004", 502, "A definitions delta could not be applied; the full version was downloaded instead.", "Nothing to do if the full download succeeded; otherwise republish the channel.";
    DefsDiskFull = "6005", 507, "There is no space left to stage or install the definitions.", "Free space on the file system holding the agent's state dir; the installed version was kept.";
    DefsDownloadInterrupted = "6006", 502, "The definitions download was cut off before it was complete.", "Nothing to do: the next attempt resumes where this one stopped. If it recurs, check the proxy or firewall for idle or size limits.";
    DefsHashMismatch = "6007", 502, "The downloaded definitions do not match their signed hash: they were corrupted or tampered with in transit.", "Check for a proxy or inspection device that rewrites downloads; the installed version was kept.";
    DefsTooLarge = "6008", 502, "The update server sent more bytes than the signed length allows.", "Check the mirror and any proxy in the path; the download was refused and the installed version kept.";
    DefsUserUpdateForbidden = "6009", 403, "The agent's policy does not allow a local user to force a definitions update.", "Ask the platform admin to queue an update from the control plane, or to set `allow_user_update` in the policy.";
    DefsChannelUnknown = "6010", 404, "The update server's signed metadata does not list this channel.", "Publish to the channel (`tether defs publish`) or fix the channel names in the policy.";
    DefsCoolingDown = "6011", 503, "The update server asked the agent to wait (429/503 with Retry-After).", "Nothing to do: the agent retries after the cool-down it was given.";
    DefsServerError = "6012", 502, "The update server answered the download with an error status.", "Check the update server's log and that the mirror is complete (`tether defs mirror`).";
    DefsBundleInvalid = "6013", 422, "The offline definitions bundle is not a valid Tether definitions bundle.", "Import the file `tether defs export` wrote, unchanged.";
    DefsNotTrusted = "6014", 400, "This agent holds no pinned definitions root, so it cannot verify updates.", "Re-enroll the agent against a control plane that serves definitions.";
    DefsInstallFailed = "6015", 500, "The definitions could not be written to the state dir.", "Check the permissions of the agent's state dir; the installed version was kept.";
    DefsProxyDownloadFailed = "6016", 502, "The proxy was reached but the download through it failed.", "Check the proxy's log for the update server's host; it may block, limit or rewrite the download.";
    DefsChannelNameRefused = "6017", 422, "The agent refused a definitions channel name from its policy, an action or signed metadata: it could become a path outside the state dir.", "Fix the channel names in the policy (1-64 of a-z, 0-9, '.', '_', '-'); check that the update server serves this control plane's repository.";
    DefsRootKeyOnline = "6018", 500, "The definitions root signing key is on the server's disk, where a break-in could sign a new trust root for every agent.", "Move it offline: `tether defs keygen --out /media/offline/root.pem`, then `tether defs rotate-key --role root --new-key /media/offline/root.pem --root-key DATA_DIR/defs/keys/root.pem`, then delete the old key (docs/defs-keys.md).";
    DefsMirrorFrozen = "6019", 502, "The update server's signed timestamp has expired by this host's clock: the mirror stopped being refreshed (a frozen mirror).", "Refresh the mirror from the control plane (`tether defs mirror --to DIR`, on a schedule shorter than a day), or remove it from the policy's update URLs; if the timestamp is recent, check this host's clock.";
    DefsMirrorBehind = "6020", 502, "The update server offers older signed metadata than the control plane (or than this agent already trusts): the mirror is behind.", "Refresh the mirror from the control plane (`tether defs mirror --to DIR`) after every publish, or remove it from the policy's update URLs.";
    DefsMirrorUnverified = "6021", 502, "The update server's timestamp does not verify against this agent's pinned root chain: a bad signature, or another repository's metadata.", "Check that the update server serves this control plane's repository, unchanged (a mirror made with `tether defs mirror`); if the keys were rotated, check the mirror carries the new root.";
    DefsJoinNoRepository = "6030", 404, "`tether defs join` found no definitions repository where it looked: this server's DATA_DIR/defs, or the --shared directory.", "Run it on the joining server's host with that server's --data-dir, and --shared naming the directory the other servers' `defs_dir` names, mounted on this host.";
    DefsJoinKeys = "6031", 422, "The keys given to `tether defs join` do not sign what it must sign: this repository's newest root, or the shared repository's root when its chain must be extended.", "Pass this repository's current root key with --root-key and, if the message asks, the shared repository's with --shared-root-key (from the offline media: docs/defs-keys.md).";
    DefsJoinSame = "6032", 409, "The repository given to `tether defs join` is the shared repository itself.", "Nothing to join: set this server's `defs_dir` to the shared directory and restart it.";

    // 70xx: the task queue.
    TaskSpecInvalid = "7001", 422, "The task's spec is not valid for its kind.", "Fix the named field of the spec; the message says what the kind accepts.";
    TaskStaleEpoch = "7002", 409, "The heartbeat or result carries a stale lease epoch: the task moved on to a newer attempt.", "Nothing to do on the agent: it stops this attempt. The newer attempt's agent reports the result.";
    TaskNotLeased = "7003", 409, "The task is not leased to this agent.", "Nothing to do on the agent: it drops the work. An admin can read the task with `tether tasks show ID`.";
    TaskFinal = "7004", 409, "The task already finished (succeeded, dead-lettered or cancelled).", "Use `tether tasks retry ID` to run a dead-lettered or cancelled task again.";
    TaskNotRetriable = "7005", 409, "Only a dead-lettered or cancelled task can be retried.", "Wait for the task to finish, or cancel it first.";
    TaskTargetInvalid = "7006", 422, "The task's target names no agent or group that can run it.", "Target an existing agent, or a group and agent kind (`--group G --agent-kind K`).";
    TaskScheduleInvalid = "7007", 422, "The task's schedule or allowed hours are not valid.", "Use `--every 1h` or `--cron 'M H DOM MON DOW'` with weekdays by name, an IANA time zone, and `HH:MM-HH:MM` hours.";
    TaskPollersFull = "7008", 503, "The server holds as many task polls as it allows.", "Nothing to do: the agent polls again after Retry-After, and check-ins still deliver admin actions.";
    SiteInvalid = "7009", 422, "The site name or its time zone is not valid.", "Use 1-64 characters (letters, digits, '-', '_', '.') and an IANA time zone such as Europe/Paris.";
    TaskResultTooLarge = "7010", 413, "The result chunk is larger than the server accepts.", "Nothing to do on the agent: it splits results into smaller chunks. Raise the server's body limit if it persists.";

    // 81xx: discovery scans.
    ScanSpecInvalid = "8101", 422, "The discovery spec is not valid: a target, port, SNI, STARTTLS, rate or time setting cannot be read.", "Fix the named field; the message says what it accepts.";
    ScanSpecTooLarge = "8102", 422, "The discovery spec asks for more than one scan may cover (addresses, ports, host names or endpoints).", "Split the scan into smaller ones: at most 65,536 addresses (an IPv4 /16), 1,024 ports, 1,024 host names and 1,048,576 endpoints per scan.";
    ScanTargetsEmpty = "8103", 422, "The discovery spec names no target or no port.", "Give at least one target (CIDR, range, address or host name) and one port.";

    // 84xx: issuance by the built-in private CA.
    CsrMalformed = "8401", 422, "The certificate signing request cannot be read: it is not PEM or DER PKCS#10, is larger than 16 KiB, or has an extension the CA does not accept.", "Send the CSR the agent generated; do not edit it. If the agent sent it, upgrade the agent.";
    CsrSignatureInvalid = "8402", 422, "The certificate signing request's signature does not verify with its own public key.", "Generate a new key and CSR; a CSR altered after signing is refused.";
    CsrKeyRefused = "8403", 422, "The key in the certificate signing request is of a type or size the CA does not sign.", "Use ECDSA P-256 or P-384, Ed25519, or RSA of 2048 to 8192 bits.";
    CsrNameNotAllowed = "8404", 422, "The certificate signing request asks for a name the task does not allow, or for no name at all.", "Ask only for names listed in the deploy task's `names`, or add the name to the task.";
    CaNotInitialized = "8405", 503, "The built-in CA has no intermediate on this server, or its key cannot be decrypted.", "Run `tether certs ca init` (see docs/pki.md), and give the server the same CA key (TETHER_CA_KEY or the key file) it was initialized with.";
    CaRootKeyOnline = "8406", 500, "The built-in CA's root key is on the server's disk.", "Move it offline as docs/pki.md describes: the server needs only the intermediate.";
    // 842x: revocation by the built-in CA.
    RevokeUnknownCert = "8440", 404, "The fingerprint names no certificate this control plane's built-in CA issued, so it cannot be revoked here.", "Check the fingerprint with `tether certs history FP`; a certificate from another CA (ACME, an operator's CA) is revoked by that CA.";
    RevokeReasonInvalid = "8441", 422, "The revocation reason is not one the CA accepts.", "Use one of unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn.";
    RevocationUnavailable = "8442", 503, "The built-in CA cannot sign its CRL or OCSP answers on this server now (no CA open, or the store failed).", "Check the server log for TETHER-E8405 or E5001; clients keep the last CRL until its nextUpdate.";

    // 842x: issuance through an ACME CA (RFC 8555). The CA's problem document (type, detail, subproblems) is kept beside the code.
    AcmeUnreachable = "8420", 502, "The ACME server could not be reached: DNS, TCP, TLS or HTTP to its directory or API failed.", "Check the directory URL, that this server can reach it (proxy, firewall), and the CA file given with `--ca-file` for a private ACME server.";
    AcmeNotAcme = "8421", 502, "The ACME server's answer is not an ACME document: not a directory, or an error that is not a problem document.", "Check that the directory URL is the ACME directory itself (e.g. https://acme.example/directory), not a web page or a proxy's error page.";
    AcmeRateLimited = "8422", 429, "The ACME CA refused the request because a rate limit was reached (rateLimited).", "Wait until the time in the problem's detail or Retry-After before retrying; issue fewer certificates for the same names or account.";
    AcmeIdentifierRejected = "8423", 422, "The ACME CA will not issue for a name in the order (rejectedIdentifier, unsupportedIdentifier, caa).", "Remove the name the problem names from the deploy task, or fix its CAA record to allow this CA.";
    AcmeChallengeFailed = "8424", 502, "The ACME CA could not validate the http-01 challenge for a name (unauthorized, incorrectResponse, connection, dns, tls).", "Check that the name resolves, from the CA, to the host whose agent answered the challenge, and that port 80 (or the webroot) there serves /.well-known/acme-challenge/.";
    AcmeAccountRefused = "8425", 422, "The ACME CA refused the account: it does not exist, needs external account binding, or refused the contact address.", "Register the issuer again (`tether certs acme add`), with a valid --email, or with the binding the CA requires.";
    AcmeRequestRefused = "8426", 422, "The ACME CA refused a request as malformed (malformed, badCSR, badSignatureAlgorithm, badPublicKey, or another client-side problem).", "Read the problem's detail: a key type or name the CA does not accept is named there; otherwise report it with the problem document.";
    AcmeServerError = "8427", 502, "The ACME CA failed on its side (serverInternal, or a problem of a type Tether does not know).", "Retry later; if it persists, read the problem document and the CA's status page.";
    AcmeTimeout = "8428", 504, "The ACME order did not become ready or valid within the time Tether waits.", "Retry; if it persists, the CA is slow to validate or to issue: check its status.";
    AcmeAccountKeyUnavailable = "8429", 503, "The ACME account's sealed key cannot be opened with this server's CA key (KEK), or the sealed account is corrupt.", "Give the server the same CA key (TETHER_CA_KEY or the key file) the issuer was registered with, or register the issuer again.";
    AcmeChallengeTokenInvalid = "8430", 422, "An http-01 challenge token is not base64url (RFC 8555 §8.3), so it could name another path; nothing was written.", "Report it with the task's id: the ACME CA or the control plane sent a token no CA should send.";
    AcmeChallengeProvisionFailed = "8431", 500, "The agent could not serve the http-01 challenge: the webroot is not writable, or its own listener's port is taken.", "Give `--webroot` the directory the web server serves for the name, writable by the agent, or free the port (80) for the agent's own listener.";
    AcmeIssuerUnknown = "8432", 422, "The deploy names an ACME issuer (`acme:NAME`) this control plane has not registered.", "Register it with `tether certs acme add NAME --directory URL`, or correct the spec's issuer (`tether certs acme list`).";
    AcmeAgentCannotAnswer = "8433", 422, "The agent cannot answer the ACME http-01 challenge: it is older than ACME issuance, or the deploy names no challenge.", "Upgrade the agent to the server's version, and give the deploy a challenge (`--webroot DIR` or `--http01-port PORT`).";
    AcmeOrderHandleInvalid = "8434", 409, "The ACME order the agent names was not started by this control plane for this task and lease (altered, from an earlier lease, or sealed with another KEK).", "Nothing to do for one occurrence: the agent starts a new order on its next attempt. If it repeats across servers, give every server the same TETHER_CA_KEY.";
    AcmeKekUnavailable = "8435", 503, "This server has no key-encryption key (KEK) to seal or open ACME accounts.", "Set TETHER_CA_KEY (the same on every server) or restore DATA_DIR/ca.kek, then restart the server.";
    AcmeChainInvalid = "8436", 502, "The ACME CA's answer is not a certificate for the request: not PEM, names other than the order's, or another key than the agent's CSR. Nothing was deployed.", "Check the ACME CA; report the task's id with the server log's detail.";

    // 85xx: the deploy transaction on the endpoint.
    DeploySpecInvalid = "8501", 422, "The deploy spec is not valid: a path, name, mode, owner, reload command or verify endpoint cannot be read.", "Fix the named field; the message says what it accepts.";
    DeployWriteFailed = "8502", 500, "A file of the PEM set could not be backed up, written or renamed; the old set was restored.", "Check the named path's directory, permissions and free space on the target host, then retry the deploy.";
    DeployReloadFailed = "8503", 500, "The reload command failed or did not finish in time; the old certificate was restored and is served.", "Read the recorded command output (e.g. `nginx -t`), fix the service's configuration, then retry the deploy.";
    DeployVerifyMismatch = "8504", 502, "After the reload, the endpoint still serves another certificate than the one deployed; the old certificate was restored.", "Check that the reload command reloads the service that answers on the verify endpoint (a load balancer or another instance may answer), then retry.";
    DeployVerifyUnreachable = "8505", 502, "The verify endpoint could not be reached or did not complete a TLS handshake after the reload; the old certificate was restored.", "Check the verify host and port in the spec and that the service listens there, then retry.";
    DeployRollbackFailed = "8506", 500, "The deploy failed and the rollback could not prove the old certificate is served again.", "Act now: check the service on the target host by hand; the backup of the old files is kept in the agent's state dir under deploy/.";
    DeployInterrupted = "8507", 500, "The agent stopped in the middle of a deploy; at restart it rolled the PEM set back to the old files.", "Retry the deploy; nothing was left half-written.";
    DeployIssueFailed = "8508", 502, "The control plane refused to issue the certificate for this deploy.", "Read the CA's code in the message (TETHER-E84xx) and fix the task's names or the CA.";
    DeployKeyMismatch = "8509", 422, "The certificate does not match the key generated for it, or its chain is not valid PEM.", "Nothing was written; retry the deploy. If it persists, report it: the CA answered with a certificate for another key.";
    DeploySecretUnavailable = "8510", 422, "The keystore password's secret reference (env:NAME or file:PATH) could not be read on the agent's host; nothing was written.", "Set the named environment variable for the agent, or create the named file (the password on one line) readable by the agent, then retry the deploy.";
    DeployKeystoreUnreadable = "8511", 422, "The existing keystore at the target path cannot be opened with the given password (another password, or not a PKCS#12 file); nothing was written.", "Give the keystore's current password in the secret reference, or move the file away, then retry the deploy.";
    DeploySshUnreachable = "8520", 502, "The remote target's SSH server could not be reached, or did not complete an SSH handshake (refused, timed out, not SSH, or the connection dropped); nothing more was changed on it.", "Check the spec's ssh host and port, that sshd listens there and that the agent's host may connect to it, then retry the deploy.";
    DeploySshHostKeyMismatch = "8521", 502, "The remote host presented an SSH host key other than the one pinned in the spec; the agent refused it before authenticating or writing anything.", "Compare the host's key (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host) with the spec's ssh.host_key; pin the right one, or find out who answers in its place.";
    DeploySshAuthFailed = "8522", 422, "The remote host's SSH server refused the spec's user with the given key or password; nothing was changed on it.", "Check ssh.user and that the key's public half is in the user's authorized_keys (or that the password is right and password login is allowed), then retry the deploy.";
    DeploySshCredentialUnavailable = "8523", 422, "The SSH key or password's secret reference could not be read on the agent's host, or the key cannot be decoded (not an OpenSSH or PKCS#8 key, or a wrong passphrase); nothing was changed.", "Create the named file or set the named variable for the agent (ssh.key, ssh.passphrase, ssh.password), with a key in OpenSSH format, then retry the deploy.";
    DeploySshSudoRefused = "8524", 422, "The spec asks for sudo, and `sudo -n` on the remote host refused the SSH user (a password is required, or the user may not run it); nothing was changed.", "Allow the user to run sudo without a password for the deploy's commands (a NOPASSWD sudoers rule), or deploy without sudo as a user who owns the files.";
    DeployRemoteWriteFailed = "8525", 500, "A file on the remote host could not be backed up, written or renamed (a full disk, a read-only file system, or permissions); the old set was restored.", "Read the remote error in the message, free space or fix the permissions of the named directory on the remote host, then retry the deploy.";
    DeployRemoteCommandFailed = "8526", 500, "A command the deploy runs on the remote host failed (a missing tool such as flock or timeout, an unknown owner, or a path that is not a regular file); the old set was restored.", "Read the remote error in the message; the remote host needs a POSIX sh and coreutils and util-linux (flock, timeout), then retry the deploy.";
    DeployKeytoolUnavailable = "8540", 422, "A JKS keystore is written by the host's own `keytool`, which is missing here, failed, or took longer than 60 s; nothing was written.", "Install a JRE's keytool on the host (or set JAVA_HOME), or deploy with store_type PKCS12, which Java 9 and later read as their default keystore type.";
    ApprovalNotApplicable = "8530", 422, "Only a deploy task can wait for an admin's approval; this task is of another kind.", "Approve or reject deploy tasks only (`tether tasks show ID` names the kind); other tasks run without an approval.";
    TaskNotHeld = "8531", 409, "The task was not created to wait for an admin's approval, so there is nothing to approve or reject.", "Create the deploy with `tether certs deploy --require-approval` (or set `--require-approval` on the renewal policy) to hold it; stop a task with `tether tasks cancel ID`.";
    TaskAlreadyApproved = "8532", 409, "The task was already approved; the message says by whom and when.", "Nothing to do: it runs when its agent asks for work. Stop it with `tether tasks cancel ID` if it must not run.";
    RejectReasonInvalid = "8533", 422, "The rejection's reason is empty, longer than 1024 characters, or holds control characters.", "Give `--reason` one line of text saying why the deploy is rejected.";

    // 86xx: certificate renewal.
    RenewalNoLocation = "8601", 422, "The certificate has no recorded deploy location, so there is nowhere to renew it.", "Deploy it once with `tether certs deploy` (renewal redeploys where a verified deploy put it), or let it expire.";
    RenewalNoEligibleAgent = "8602", 422, "The agent that deployed the certificate at a location no longer exists, so no bot can renew it there.", "Enroll an agent on that host and deploy the certificate again with `tether certs deploy`.";
    RenewalAgentInactive = "8603", 503, "The agent at a location is Inactive (silent past its deadline), so the renewal waits for it.", "Bring the agent back (`tether agents show ID` says since when it is silent); the renewal retries on its own with back-off.";
    RenewalTaskFailed = "8604", 502, "A deploy task of the renewal failed or was dead-lettered; its error is in the reason.", "Read the task's error (`tether tasks show ID`), fix the cause on the host; the renewal retries with back-off, or run `tether certs renew FP`.";
    RenewalCaFailed = "8605", 502, "The CA refused or could not issue the renewed certificate.", "Read the CA's code in the reason (TETHER-E84xx), fix the CA or the policy's issuer; the renewal retries with back-off, with the fallback issuer when one is set.";
    RenewalVerifyMismatch = "8606", 502, "The renewed certificate was deployed but the endpoint did not serve it, so the deploy rolled back.", "Check that the reload reaches the service on the verify endpoint (a balancer may answer); the renewal retries with back-off.";
    RenewalAlreadyIssued = "8607", 409, "This renewal already issued a certificate for this location; a second one is refused.", "Nothing to do: the renewal fails this attempt and retries with a new one; issuance is idempotent per renewal.";
    RenewalInProgress = "8608", 409, "A renewal of this certificate is already under way.", "Follow it with `tether certs renewals`; force a new one only once it has ended.";
    RenewalIssuerUnavailable = "8609", 503, "The issuer the renewal policy names is not available on this server.", "Name `builtin` or an ACME account this server has (`acme:NAME`), or set a fallback issuer.";
    RenewalPolicyInvalid = "8610", 422, "The renewal policy is not valid: the fraction, the days before expiry or an issuer name cannot be read.", "Give either a fraction between 0.1 and 0.95 or 1 to 365 days before expiry, and issuers `builtin` or `acme:NAME`.";
    // 875x: the escalation capture (`tether-agent capture`, issue #13).
    CaptureToolMissing = "8750", 500, "The packet capture cannot start: tcpdump is not installed or not on the agent's PATH.", "Install the tcpdump package (`apt-get install tcpdump`) and run the capture again.";
    CapturePermission = "8751", 403, "tcpdump may not capture here: the process lacks CAP_NET_RAW (and CAP_NET_ADMIN).", "Run the capture as root, or give the service the capabilities for the capture only (docs/capture.md).";
    CaptureFailed = "8752", 500, "The packet capture did not start or did not write its file.", "Read tcpdump's message quoted here (interface, filter, disk space) and run the capture again.";
    CaptureInvalid = "8753", 400, "The capture's duration or output is not usable: a window outside 2 s to 1 h, or an output path that cannot be written.", "Give `--for` between 2s and 1h and an `--out` in a writable directory.";
    CaptureNoAddress = "8754", 500, "None of the control plane, proxy, update server or resolver addresses could be resolved, so the capture filter would name nothing.", "Run `tether-agent doctor` to see why the names do not resolve, then run the capture again.";
    // 872x: packages and the unattended agent install (issue #13).
    PreseedUnreadable = "8720", 400, "The agent's preseed file exists but cannot be read.", "Check the file named in the message (permissions, a directory in its place); as root, fix it and run `dpkg --configure tether-agent` (or `tether-agent preseed`) again.";
    PreseedInvalid = "8721", 400, "The agent's preseed (file or TETHER_SERVER, TETHER_CA_PIN, TETHER_TOKEN) holds a value that cannot be used: unknown key, broken TOML, a server that is not https://, a CA pin that is not sha256:HEX, or a malformed token.", "Correct the key or variable the message names, then run `dpkg --configure tether-agent` (or `tether-agent preseed`) again; nothing was enrolled and no configuration was removed.";
    PreseedIncomplete = "8722", 400, "The agent's preseed gives some but not all of the server URL, the CA pin and the enrollment token.", "Add the missing keys the message names to /etc/tether/agent.preseed (or set TETHER_SERVER, TETHER_CA_PIN, TETHER_TOKEN), then run `dpkg --configure tether-agent` again.";
    PreseedTokenLeft = "8723", 500, "The agent enrolled, but the enrollment token could not be removed from the preseed file.", "Delete the preseed file named in the message by hand, and revoke the token if others could read it (`tether token revoke ID`).";
    PreseedInsecure = "8724", 400, "The agent's preseed file is not a regular file owned by root and writable by root only, so it could name a server nobody chose.", "Make it a regular file, `chown root:root` and `chmod 600` it, check its content, then run `dpkg --configure tether-agent` again.";

    // 87xx: backup and restore of a control plane (`tether backup`, `tether restore`).
    BackupSourceUnreadable = "8700", 400, "The server's data dir cannot be backed up: it is missing, unreadable or not a Tether data dir.", "Pass the server's own `--data-dir` (and `--database-url`, or its `--config`) and run as the user that owns it.";
    BackupSnapshotFailed = "8701", 503, "The database could not be copied: SQLite's VACUUM INTO or pg_dump failed.", "Read the database's message; for PostgreSQL install postgresql-client (pg_dump as new as the server) and check the URL and credentials.";
    BackupWriteFailed = "8702", 500, "The backup file (or the restored data dir) could not be written.", "Check the space and permissions of the named directory; nothing partial was left in place.";
    BackupCorrupt = "8703", 422, "The backup file is truncated or corrupt, or is not a Tether backup.", "Use another copy of the backup; nothing was restored.";
    BackupChecksumMismatch = "8704", 422, "A member of the backup does not match the SHA-256 its manifest records.", "The file was altered or damaged: use another copy; nothing was restored.";
    BackupUnsafeMember = "8705", 422, "The backup holds a member that is not a plain file under its own tree (an absolute path, `..`, a link, or one its manifest does not list).", "Do not restore this file: it was not written by `tether backup`; nothing was restored.";
    BackupNewerFormat = "8706", 422, "The backup was written in a newer format than this tether reads.", "Restore it with a tether at least as new as the one that wrote it (the manifest names its version).";
    BackupWrongBackend = "8707", 422, "The backup holds one database backend and the restore targets the other.", "Restore a SQLite backup without `--database-url` (or with a sqlite:// one) and a PostgreSQL backup with `--database-url postgres://…`.";
    BackupTargetNotEmpty = "8708", 409, "The restore target (data dir or database) is not empty.", "Restore onto an empty data dir and a fresh database, or pass `--force` to replace what is there.";
    BackupDatabaseRestoreFailed = "8709", 503, "The database could not be restored; its transaction was rolled back and the data dir was not written.", "Read pg_restore's message (a pg_restore older than the dump's pg_dump cannot read it), fix it and run the restore again.";
    BackupUnstable = "8710", 503, "The data dir kept changing while it was copied, so no consistent copy was taken.", "Run the backup again when no publish or key rotation is under way.";
    BackupWrongPassphrase = "8711", 422, "The passphrase does not open this sealed backup.", "Pass the file holding the passphrase the backup was written with (`--passphrase-file`); nothing was restored.";
    BackupPassphraseNeeded = "8712", 422, "The backup is sealed with a passphrase and none was given.", "Run the restore again with `--passphrase-file FILE`.";

    // 874x: offline install bundles (`tether offline-bundle`), as the doctor checks them.
    OfflineBundleAltered = "8740", 422, "A file of the offline install bundle is missing, altered or unreadable: it does not match the bundle's SHA256SUMS and MANIFEST.json.", "Do not install it: write a fresh bundle with `tether offline-bundle` and carry it over again (check its SHA-256 on both sides).";
    OfflineBundlePinMismatch = "8741", 422, "The offline bundle pins another CA than this agent does: it was made for another control plane, or the control plane's CA was replaced.", "Write the bundle from the control plane this agent belongs to (`tether offline-bundle` there), or re-enroll the agent if the CA was replaced on purpose.";
    OfflineTokenWindow = "8742", 422, "The offline bundle's enrollment token is outside its activation window by this host's clock: not valid yet, or expired.", "Check this host's clock first (`tether-agent doctor` names its skew); if it is right, write a fresh bundle with a longer --valid-for.";
    OfflineDefsStale = "8743", 422, "The offline bundle's signed definitions have expired: the agent would refuse them at import.", "Write a fresh bundle (`tether offline-bundle --channel …`) or a fresh export (`tether defs export`) and import that.";

    // 877x: rolling upgrades, which database schema a build runs against (docs/deploy-multi-server.md).
    SchemaTooNew = "8770", 503, "The database was migrated by a newer Tether whose contract migration removed or renamed what this build still uses, so this server must not run against it.", "Upgrade this server to the release that migrated the database (the message names its migration); an older build runs only against expand-only migrations of the next release.";
    MigrationAltered = "8771", 503, "A database migration this build knows was applied with other content: a released migration file was changed, or the migrations table was edited by hand.", "Do not start servers on this database; run the release that applied it (the message names the migration) and report the change to the Tether maintainers: released migrations must never change.";

    // 5xxx: the server itself.
    StoreUnavailable = "5001", 503, "The server's database is unavailable.", "Check the database (disk, connectivity, credentials) and the server log.";
    Internal = "5002", 503, "The server hit an unexpected condition.", "Retry; if it persists, send the server log around the time named to support.";
    StoreTls = "5003", 503, "The server could not make the TLS connection to PostgreSQL that its settings ask for (database_sslmode, database_ca_file, or sslmode in the URL).", "Turn TLS on in PostgreSQL (ssl = on), give database_ca_file the CA that signed its certificate and use a host name the certificate names; only sslmode=prefer or disable connect without a verified TLS connection.";

    // 880x: agent upgrades (issue #13).
    UpgradeVersionInvalid = "8800", 400, "An agent version to upgrade to is not a plain version (digits, letters, dots, plus and minus; at most 64 characters, starting with a digit).", "Give a version such as 1.4.2 (as `tether-agent --version` prints it).";
    UpgradeBinaryRefused = "8801", 400, "The new agent binary does not run here, or reports another version than the one it is installed as.", "Check that the file is the tether-agent build for this OS and architecture and that `FILE --version` prints the expected version.";
    UpgradeRolledBack = "8802", 500, "The new agent version did not start or did not check in within the supervisor's bound, so the host runs the previous version again.", "Read the reason and the agent log of the failed version (STATE_DIR/logs), fix the cause, and publish the fix as a new version (`tether rollout publish`, then `tether rollout set`); `tether rollout resume GROUP` continues a rollout this paused.";
    UpgradeInstallFailed = "8803", 500, "The new agent binary could not be written or switched to under the state directory; the running version is unchanged.", "Check free space and the ownership of STATE_DIR/bin (the service user must own it), then let the agent retry.";
    UpgradeNoBinary = "8804", 500, "`tether-agent launch` found no agent binary to start: neither the chosen version nor the packaged binary is executable.", "Reinstall the tether-agent package, which restores the packaged binary.";
    RolloutReleaseMissing = "8805", 422, "No agent release of that version is published: a rollout can only target a version whose binary is on the definitions repository.", "Publish the binary first (`tether rollout publish --file tether-agent --version V --platform linux-x86_64`, once per platform) and check `tether rollout releases`.";
    RolloutVersionInvalid = "8806", 400, "A release version is not one a channel can carry: 1 to 32 of a-z 0-9 . -, starting with a digit (no uppercase, no `+`), or the platform is not OS-ARCH.", "Give a version such as 1.4.2 or 1.5.0-rc.1 and a platform such as linux-x86_64 (as Rust names them).";
    RolloutCanaryInvalid = "8807", 400, "A canary share must be 1 to 100 percent.", "Give --canary between 1 and 99 for a staged rollout, or leave it out to offer the version to every agent of the group at once.";
    UpgradeFetchFailed = "8808", 503, "The agent could not fetch or install the release its rollout offers; it keeps running its version and tries again later.", "Read the message (it carries the definitions updater's own code), run `tether-agent doctor` for the update path, and check `tether rollout releases` lists a release for this agent's platform.";
    UpgradeNotSupervised = "8809", 409, "The control plane offers this agent another version, but the agent does not run under `tether-agent launch`, so it cannot switch versions by itself.", "Start the agent through `tether-agent launch` (the packaged unit does), or install the version by hand with `tether-agent upgrade install`.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// In the OpenAPI document a code is a string, one of the catalog's codes.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(
                "A stable code of the error catalog (docs/errors.md), `TETHER-Ennnn`.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

/// Codes are read leniently: a peer one version newer may report a code that
/// this catalog does not have yet, and the body carrying it must still parse
/// (ARCHITECTURE.md, "Wire compatibility"). Such a code reads as
/// [`ErrorCode::UnknownPeerCode`]; the bodies that carry a message
/// ([`ApiError`], `LastError`) keep the peer's code at the head of it, see
/// [`peer_code`].
impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorCode::parse(&s).unwrap_or(ErrorCode::UnknownPeerCode))
    }
}

/// The longest peer code kept in a message; anything longer is not a code.
const PEER_CODE_MAX: usize = 32;

/// Reads a code a peer sent, with its message. A code this catalog does not
/// have becomes [`ErrorCode::UnknownPeerCode`] and the peer's code (cut to a
/// sane length, control characters dropped) heads the message, so nothing the
/// peer said is lost.
pub(crate) fn peer_code(code: &str, message: String) -> (ErrorCode, String) {
    match ErrorCode::parse(code) {
        Some(known) => (known, message),
        None => {
            let shown: String = code
                .chars()
                .filter(|c| !c.is_control())
                .take(PEER_CODE_MAX)
                .collect();
            (ErrorCode::UnknownPeerCode, format!("{shown}: {message}"))
        }
    }
}

/// The JSON body of every API error. Clients match on `code`; `message` is
/// the specific problem (with observed and expected values), `action` what to
/// do about it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ApiErrorWire")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub action: String,
    /// The server's clock when it refused, so a client can tell clock skew
    /// from a truly expired window.
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
    /// For token windows: when the token becomes (or became) valid.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub not_before: Option<OffsetDateTime>,
    /// For token windows: when the token expires (or expired).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

/// [`ApiError`] as read from the wire: the code stays a string until
/// [`peer_code`] has looked it up.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Deserialize)]
struct ApiErrorWire {
    code: String,
    message: String,
    action: String,
    #[serde(with = "time::serde::rfc3339")]
    server_time: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    not_before: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

impl From<ApiErrorWire> for ApiError {
    fn from(w: ApiErrorWire) -> Self {
        let (code, message) = peer_code(&w.code, w.message);
        ApiError {
            code,
            message,
            action: w.action,
            server_time: w.server_time,
            not_before: w.not_before,
            expires_at: w.expires_at,
        }
    }
}

impl ApiError {
    /// An error with the catalog's action and the given specific message.
    pub fn new(code: ErrorCode, message: impl Into<String>, server_time: OffsetDateTime) -> Self {
        ApiError {
            code,
            message: message.into(),
            action: code.action().to_owned(),
            server_time,
            not_before: None,
            expires_at: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} Action: {}", self.code, self.message, self.action)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_from_a_newer_catalog_is_kept_in_the_message() {
        let body = r#"{"code":"TETHER-E9999","message":"new","action":"a","server_time":"2026-05-17T12:00:00Z"}"#;
        let e: ApiError = serde_json::from_str(body).expect("parses");
        assert_eq!(e.code, ErrorCode::UnknownPeerCode);
        assert_eq!(e.message, "TETHER-E9999: new");
        // A known code is untouched.
        let body = body.replace("E9999", "E2101");
        let e: ApiError = serde_json::from_str(&body).expect("parses");
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::TokenUnknown, "new")
        );
        // A hostile "code" is cut and stripped of control characters.
        let (code, message) = peer_code(&format!("\u{1b}[31m{}", "X".repeat(100)), "m".into());
        assert_eq!(code, ErrorCode::UnknownPeerCode);
        assert_eq!(message, format!("[31m{}: m", "X".repeat(28)));
        // Bare codes read leniently too.
        let c: ErrorCode = serde_json::from_str("\"TETHER-E0000\"").expect("parses");
        assert_eq!(c, ErrorCode::UnknownPeerCode);
    }

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!(
                code.problem().ends_with('.')
                    || code.problem().ends_with('?')
                    || code.problem().ends_with(')')
            );
            assert!(!code.action().is_empty());
            assert!((400..600).contains(&code.http_status()));
        }
    }

    #[test]
    fn api_error_json_shape_is_stable() {
        let t = time::macros::datetime!(2026-05-17 19:16 UTC);
        let e = ApiError::new(ErrorCode::TokenExpired, "expired at X", t);
        let v = serde_json::to_value(&e).expect("serializes");
        assert_eq!(v["code"], "TETHER-E2103");
        assert_eq!(v["server_time"], "2026-05-17T19:16:00Z");
        assert!(v.get("not_before").is_none());
        let back: ApiError = serde_json::from_value(v).expect("parses");
        assert_eq!(back, e);
    }
}
