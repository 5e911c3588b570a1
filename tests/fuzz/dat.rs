//! Target `dat`: verifying a peer's DAT with the DAPS verifier, against a real JWKS file built
//! from keys this run generates (an Ed25519 key derived from the run seed, so that a failing
//! case replays with the same key, and an ES256 key), as `clearinghouse serve` does with
//! `idscp2.dat.jwks_file`.
//!
//! A case is a JWT built from labelled parts (header `alg` and `kid`, each claim valid or not
//! in a known way, signed by the right key, a wrong one, HMAC with the public key, or not at
//! all), sometimes damaged byte by byte afterwards, or plain garbage. Properties:
//! - nothing panics;
//! - an undamaged token verifies exactly when every label says valid, and then reports the
//!   subject, the claims and the time to expiry it carries;
//! - a token whose signature does not verify is refused for its signature or header, never
//!   for a claim (claims are not looked at before the signature checks out);
//! - a damaged token never verifies, unless the damage is only blanks around it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clearinghouse::idscp2::dat::{
    DapsVerifier, DapsVerifierConfig, DatError, DatVerifier, JwksSource, MAX_DAT_LIFETIME,
};
use clearinghouse::idscp2::tls::PeerCertificate;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};

use crate::mutate::{mutated, Mutation};
use crate::runner::{fuzz, Budget, Outcome, SplitMix, Target};

pub const TARGET: Target = Target { name: "dat", run };

const ISSUER: &str = "https://daps.fuzz.example";
const ED_KID: &str = "ed-key";
const EC_KID: &str = "ec-key";
/// A symmetric key in the JWKS: the verifier must skip it, never verify HMAC with it.
const OCT_KID: &str = "oct-key";
const LEEWAY_SECONDS: i64 = 30;
const ACCEPTED_AUDIENCE: &[&str] = &["idsc:IDS_CONNECTORS_ALL", "IDS_Connector"];

struct Keys {
    ed: Ed25519KeyPair,
    ec: EcdsaKeyPair,
    rng: SystemRandom,
    peer: PeerCertificate,
    /// Without and with a minimum security profile (TRUST).
    verifiers: [DapsVerifier; 2],
    _jwks_dir: tempfile::TempDir,
}

impl Keys {
    fn generate(run_seed: u64) -> Keys {
        let mut seeds = SplitMix(run_seed ^ 0xda75);
        let mut ed_seed = [0u8; 32];
        for chunk in ed_seed.chunks_mut(8) {
            chunk.copy_from_slice(&seeds.next().to_le_bytes());
        }
        let ed = Ed25519KeyPair::from_seed_unchecked(&ed_seed).expect("an Ed25519 seed");
        let rng = SystemRandom::new();
        let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a P-256 key");
        let ec =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
                .expect("the P-256 key just generated");
        // Uncompressed point: 0x04, x, y.
        let point = ec.public_key().as_ref();
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": ED_KID,
             "x": b64(ed.public_key().as_ref())},
            // No `alg`: any algorithm that fits the key type may be used with it.
            {"kty": "EC", "crv": "P-256", "kid": EC_KID,
             "x": b64(&point[1..33]), "y": b64(&point[33..65])},
            {"kty": "oct", "kid": OCT_KID, "k": b64(ed.public_key().as_ref())},
            {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc-key",
             "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        ]});
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).expect("the JWKS file written");
        let verifier = |profile: Option<&str>| {
            let mut config = DapsVerifierConfig::new(
                ISSUER,
                JwksSource::File(path.clone()),
                reqwest::Client::new(),
            );
            config.minimum_security_profile = profile.map(str::to_owned);
            DapsVerifier::new(config).expect("a verifier over the JWKS file")
        };
        Keys {
            ed,
            ec,
            rng,
            peer: connector_certificate(),
            verifiers: [verifier(None), verifier(Some("TRUST"))],
            _jwks_dir: dir,
        }
    }
}

/// A connector's certificate, with the key identifiers the DAPS modes require of it.
fn connector_certificate() -> PeerCertificate {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, KeyPair::generate().expect("a CA key"));
    let mut leaf = CertificateParams::new(vec!["peer".to_owned()]).expect("leaf parameters");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf
        .signed_by(&KeyPair::generate().expect("a leaf key"), &issuer)
        .expect("the leaf signed");
    PeerCertificate::new(cert.der().clone())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
enum Signer {
    Ed,
    Ec,
    /// HS256 keyed with the Ed25519 public key: the classic algorithm confusion.
    HmacWithPublicKey,
    Empty,
}

/// A claim's value, labelled with whether it passes.
#[derive(Debug, Clone)]
struct Claim {
    value: Option<Value>,
    valid: bool,
}

#[derive(Debug, Clone)]
struct Token {
    alg: Option<Value>,
    kid: Option<Value>,
    signer: Signer,
    /// Time claims are offsets from now in seconds, resolved when the case runs.
    exp: Option<TimeClaim>,
    nbf: Option<TimeClaim>,
    iss: Claim,
    aud: Claim,
    sub: Claim,
    fingerprint: Fingerprint,
    /// The profile claimed and its strength (BASE 0, TRUST 1, TRUST_PLUS 2; `None` unknown).
    profile: Option<(Value, Option<u8>)>,
    extra: Vec<(String, Value)>,
}

#[derive(Debug, Clone)]
enum TimeClaim {
    Offset(i64),
    OffsetFraction(i64),
    Other(Value),
}

impl TimeClaim {
    fn value(&self, now: i64) -> Value {
        match self {
            TimeClaim::Offset(offset) => json!(now + offset),
            TimeClaim::OffsetFraction(offset) => json!(now as f64 + *offset as f64 + 0.5),
            TimeClaim::Other(value) => value.clone(),
        }
    }

    fn seconds(&self, now: i64) -> Option<f64> {
        self.value(now).as_f64()
    }
}

#[derive(Debug, Clone, Copy)]
enum Fingerprint {
    Exact,
    UpperColons,
    InBlankList,
    InArray,
    Missing,
    Other,
    Prefix,
    OneOff,
    NotString,
}

impl Fingerprint {
    fn value(self, fingerprint: &str) -> Option<Value> {
        let colons = || {
            fingerprint
                .to_ascii_uppercase()
                .as_bytes()
                .chunks(2)
                .map(|pair| String::from_utf8_lossy(pair).into_owned())
                .collect::<Vec<_>>()
                .join(":")
        };
        let other = "ab".repeat(32);
        Some(match self {
            Fingerprint::Exact => json!(fingerprint),
            Fingerprint::UpperColons => json!(colons()),
            Fingerprint::InBlankList => json!(format!("{other} {fingerprint}")),
            Fingerprint::InArray => json!([other, fingerprint]),
            Fingerprint::Missing => return None,
            Fingerprint::Other => json!([other]),
            Fingerprint::Prefix => json!(&fingerprint[..62]),
            Fingerprint::OneOff => {
                let mut changed = fingerprint.to_owned().into_bytes();
                changed[10] = if changed[10] == b'0' { b'1' } else { b'0' };
                json!(String::from_utf8(changed).expect("hex"))
            }
            Fingerprint::NotString => json!([7]),
        })
    }

    fn valid(self) -> bool {
        matches!(
            self,
            Fingerprint::Exact
                | Fingerprint::UpperColons
                | Fingerprint::InBlankList
                | Fingerprint::InArray
        )
    }
}

#[derive(Debug, Clone)]
enum Case {
    Token {
        token: Box<Token>,
        trust_required: bool,
        padding: (&'static str, &'static str),
        mutations: Vec<Mutation>,
    },
    Garbage(Vec<u8>),
}

fn claim(
    valid: impl Strategy<Value = Value>,
    invalid: impl Strategy<Value = Option<Value>>,
) -> impl Strategy<Value = Claim> {
    prop_oneof![
        4 => valid.prop_map(|v| Claim { value: Some(v), valid: true }),
        1 => invalid.prop_map(|value| Claim { value, valid: false }),
    ]
}

fn time_claim(offsets: Vec<i64>) -> impl Strategy<Value = TimeClaim> {
    prop_oneof![
        4 => select(offsets.clone()).prop_map(TimeClaim::Offset),
        1 => select(offsets).prop_map(TimeClaim::OffsetFraction),
        1 => select(vec![json!(null), json!("1700000000"), json!(1e300), json!(-1e300), json!(u64::MAX), json!(i64::MIN), json!([1])])
            .prop_map(TimeClaim::Other),
    ]
}

fn token() -> impl Strategy<Value = Token> {
    let alg = prop_oneof![
        6 => Just(None),
        2 => select(vec!["EdDSA", "ES256", "RS256", "HS256", "none", "ES384", "PS256", "eddsa", ""]).prop_map(|a| Some(json!(a))),
        1 => Just(Some(json!(null))),
    ];
    let kid = prop_oneof![
        6 => Just(None),
        2 => select(vec![ED_KID, EC_KID, OCT_KID, "enc-key", "unknown", ""]).prop_map(|k| Some(json!(k))),
        1 => Just(Some(json!(7))),
    ];
    let signer = prop_oneof![
        4 => Just(Signer::Ed),
        3 => Just(Signer::Ec),
        1 => Just(Signer::HmacWithPublicKey),
        1 => Just(Signer::Empty),
    ];
    // Offsets keep clear of the leeway's edges, so that a case means the same a few seconds on.
    let exp = prop_oneof![
        8 => time_claim(vec![-10_000_000, -3600, -100, -10, 0, 100, 3600, 63_072_000, 1_000_000_000_000]).prop_map(Some),
        1 => Just(None),
    ];
    let nbf = prop_oneof![
        2 => Just(None),
        2 => time_claim(vec![-3600, -100, 0, 10, 100, 3600]).prop_map(Some),
    ];
    let iss = claim(
        Just(json!(ISSUER)),
        prop_oneof![
            Just(None),
            Just(Some(json!(""))),
            Just(Some(json!("https://daps.other.example"))),
            Just(Some(json!([ISSUER])))
        ],
    );
    let aud = claim(
        prop_oneof![
            select(ACCEPTED_AUDIENCE).prop_map(|a| json!(a)),
            (select(ACCEPTED_AUDIENCE), ".{0,8}").prop_map(|(a, other)| json!([other, a])),
        ],
        prop_oneof![
            Just(None),
            Just(Some(json!("idsc:SOMEONE_ELSE"))),
            Just(Some(json!([]))),
            Just(Some(json!([ACCEPTED_AUDIENCE[0], 7]))),
            Just(Some(json!(7)))
        ],
    );
    let sub = claim(
        ".{1,24}".prop_map(|s| json!(s)),
        prop_oneof![
            Just(None),
            Just(Some(json!(""))),
            Just(Some(json!(null))),
            Just(Some(json!(["sub"])))
        ],
    );
    let fingerprint = select(vec![
        Fingerprint::Exact,
        Fingerprint::Exact,
        Fingerprint::UpperColons,
        Fingerprint::InBlankList,
        Fingerprint::InArray,
        Fingerprint::Missing,
        Fingerprint::Other,
        Fingerprint::Prefix,
        Fingerprint::OneOff,
        Fingerprint::NotString,
    ]);
    let profile = prop_oneof![
        1 => Just(None),
        4 => select(vec![
            ("idsc:BASE_SECURITY_PROFILE", Some(0)), ("BASE", Some(0)), ("idsc:BASE_CONNECTOR_SECURITY_PROFILE", Some(0)),
            ("idsc:TRUST_SECURITY_PROFILE", Some(1)), ("TRUSTED_CONNECTOR_SECURITY_PROFILE", Some(1)), ("idsc:TRUST", Some(1)),
            ("idsc:TRUST_PLUS_SECURITY_PROFILE", Some(2)), ("TRUST_PLUS", Some(2)), ("idsc:TRUSTED_CONNECTOR_PLUS_SECURITY_PROFILE", Some(2)),
            ("trust", None), ("idsc:GOLD", None), ("", None),
        ])
        .prop_map(|(name, rank)| Some((json!(name), rank))),
        1 => Just(Some((json!(2), None))),
    ];
    let extra = vec(("[a-z]{1,8}", ".{0,8}".prop_map(|s| json!(s))), 0..3);
    (
        alg,
        kid,
        signer,
        exp,
        nbf,
        (iss, aud, sub),
        fingerprint,
        profile,
        extra,
    )
        .prop_map(
            |(alg, kid, signer, exp, nbf, (iss, aud, sub), fingerprint, profile, extra)| Token {
                alg,
                kid,
                signer,
                exp,
                nbf,
                iss,
                aud,
                sub,
                fingerprint,
                profile,
                extra,
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    let padding = (
        select(vec!["", " ", "\n"]),
        select(vec!["", " ", "\r\n", "\t"]),
    );
    prop_oneof![
        6 => (token(), any::<bool>(), padding, Just(Vec::new())),
        3 => (token(), any::<bool>(), Just(("", "")), vec(any::<Mutation>(), 1..4)),
    ]
    .prop_map(|(token, trust_required, padding, mutations)| Case::Token {
        token: Box::new(token),
        trust_required,
        padding,
        mutations,
    })
    .boxed()
    .prop_union(vec(any::<u8>(), 0..200).prop_map(Case::Garbage).boxed())
}

/// The header and claims a token is built from, its text, and whether every label says valid.
fn build(
    token: &Token,
    keys: &Keys,
    trust_required: bool,
    now: i64,
) -> (String, Value, bool, bool) {
    let (default_alg, default_kid) = match token.signer {
        Signer::Ed => ("EdDSA", ED_KID),
        Signer::Ec => ("ES256", EC_KID),
        Signer::HmacWithPublicKey => ("HS256", ED_KID),
        Signer::Empty => ("EdDSA", ED_KID),
    };
    let alg = token.alg.clone().unwrap_or(json!(default_alg));
    let kid = token.kid.clone().unwrap_or(json!(default_kid));
    let header = json!({"typ": "JWT", "alg": alg, "kid": kid});

    let mut claims = Map::new();
    for (name, value) in &token.extra {
        claims.insert(name.clone(), value.clone());
    }
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            claims.insert(name.to_owned(), value);
        }
    };
    put("exp", token.exp.as_ref().map(|c| c.value(now)));
    put("nbf", token.nbf.as_ref().map(|c| c.value(now)));
    put("iss", token.iss.value.clone());
    put("aud", token.aud.value.clone());
    put("sub", token.sub.value.clone());
    put(
        "transportCertsSha256",
        token.fingerprint.value(&keys.peer.fingerprint),
    );
    put(
        "securityProfile",
        token.profile.as_ref().map(|(name, _)| name.clone()),
    );
    let claims = Value::Object(claims);

    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = match token.signer {
        Signer::Ed => keys.ed.sign(input.as_bytes()).as_ref().to_vec(),
        Signer::Ec => keys
            .ec
            .sign(&keys.rng, input.as_bytes())
            .expect("ECDSA signing")
            .as_ref()
            .to_vec(),
        Signer::HmacWithPublicKey => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, keys.ed.public_key().as_ref());
            ring::hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
        }
        Signer::Empty => Vec::new(),
    };
    let text = format!("{input}.{}", b64(&signature));

    let signature_valid = matches!(
        (token.signer, alg.as_str(), kid.as_str()),
        (Signer::Ed, Some("EdDSA"), Some(ED_KID)) | (Signer::Ec, Some("ES256"), Some(EC_KID))
    );
    let exp_ok = token
        .exp
        .as_ref()
        .and_then(|c| c.seconds(now))
        .is_some_and(|exp| exp + LEEWAY_SECONDS as f64 >= now as f64);
    let nbf_ok = match &token.nbf {
        None => true,
        Some(TimeClaim::Other(Value::Null)) => true,
        Some(claim) => claim
            .seconds(now)
            .is_some_and(|nbf| nbf <= (now + LEEWAY_SECONDS) as f64),
    };
    let profile_ok = !trust_required
        || token
            .profile
            .as_ref()
            .is_some_and(|(_, rank)| rank.is_some_and(|r| r >= 1));
    let claims_valid = exp_ok
        && nbf_ok
        && token.iss.valid
        && token.aud.valid
        && token.sub.valid
        && token.fingerprint.valid()
        && profile_ok;
    (text, claims, signature_valid, claims_valid)
}

fn is_claim_error(error: &DatError) -> bool {
    matches!(
        error,
        DatError::MissingClaim(_)
            | DatError::MalformedClaim { .. }
            | DatError::Expired
            | DatError::NotYetValid
            | DatError::IssuerMismatch { .. }
            | DatError::AudienceMismatch { .. }
            | DatError::FingerprintMismatch
            | DatError::SecurityProfileTooLow { .. }
    )
}

fn run(budget: &Budget) -> Outcome {
    let keys = Arc::new(Keys::generate(budget.run_seed));
    fuzz(TARGET.name, budget, case(), move |case| check(&keys, case))
}

fn check(keys: &Keys, case: Case) -> Result<(), TestCaseError> {
    let (token, trust_required, padding, mutations) = match case {
        Case::Garbage(bytes) => {
            let result = futures::executor::block_on(keys.verifiers[0].verify(&bytes, &keys.peer));
            prop_assert!(
                result.is_err(),
                "garbage verified: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            return Ok(());
        }
        Case::Token {
            token,
            trust_required,
            padding,
            mutations,
        } => (token, trust_required, padding, mutations),
    };
    let now = now();
    let (text, claims, signature_valid, claims_valid) = build(&token, keys, trust_required, now);
    let verifier = &keys.verifiers[usize::from(trust_required)];
    let sent = mutated(
        format!("{}{text}{}", padding.0, padding.1).into_bytes(),
        &mutations,
    );
    let result = futures::executor::block_on(verifier.verify(&sent, &keys.peer));

    if !mutations.is_empty() {
        if result.is_ok() {
            let same = std::str::from_utf8(&sent).is_ok_and(|s| s.trim() == text);
            prop_assert!(
                same,
                "a damaged token verified: {:?}",
                String::from_utf8_lossy(&sent)
            );
        }
        return Ok(());
    }
    match result {
        Ok(dat) => {
            prop_assert!(
                signature_valid && claims_valid,
                "an invalid token verified (signature {signature_valid}, claims {claims_valid})"
            );
            let subject = token.sub.value.as_ref().and_then(Value::as_str);
            prop_assert_eq!(Some(dat.subject.as_str()), subject);
            prop_assert_eq!(&dat.claims, &claims);
            let exp = token
                .exp
                .as_ref()
                .and_then(|c| c.seconds(now))
                .expect("a verified token has exp");
            let left = Duration::try_from_secs_f64((exp - now as f64).max(0.0))
                .unwrap_or(MAX_DAT_LIFETIME)
                .min(MAX_DAT_LIFETIME);
            let reported = dat.expires_in.expect("a DAPS token expires");
            prop_assert!(
                reported <= left + Duration::from_secs(1)
                    && reported + Duration::from_secs(5) >= left,
                "expires_in {reported:?}, expected about {left:?}"
            );
        }
        Err(error) => {
            prop_assert!(
                !(signature_valid && claims_valid),
                "a valid token was refused: {error}"
            );
            if !signature_valid {
                prop_assert!(
                    !is_claim_error(&error),
                    "claims were judged before the signature: {error}"
                );
            }
        }
    }
    Ok(())
}
