//! TLS on both of the collector's ports, with certificates made by the test
//! (rcgen): a probe that trusts the CA reports through it, the CLI reads the
//! API over HTTPS, and what does not hold the right certificate is refused.

use std::process::Command;
use std::time::Duration;

use meshwatch_e2e::{Collector, Service, bin_dir, wait_for};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use crate::bad_input::{connect, hello_as};

/// A CA and, in PEM files, a server certificate for `127.0.0.1` and
/// `localhost` and a client certificate, all issued by it.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "meshwatch test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let leaf = |name: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            "server",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        leaf(
            "client",
            vec!["probe".to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Self { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

/// The collector's HTTPS base URL.
fn https(collector: &Collector) -> String {
    collector.http.replacen("http://", "https://", 1)
}

/// Runs `meshwatch status --json` against `base` with `tls` arguments.
fn status(base: &str, tls: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("meshwatch"))
        .args(["status", "--json", "--collector", base])
        .args(tls)
        .env_remove("MESHWATCH_TLS_CA")
        .output()
        .expect("run meshwatch status")
}

/// Waits until `meshwatch status` over HTTPS lists `service` with the
/// figures of a snapshot.
fn wait_listed(base: &str, tls: &[&str], service: &str) -> serde_json::Value {
    wait_for(
        &format!("{service} listed over HTTPS"),
        Duration::from_secs(30),
        || {
            let out = status(base, tls);
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            json["services"]
                .as_array()?
                .iter()
                .find(|i| i["service"] == service && i["headline"].is_object())
                .cloned()
        },
    )
}

/// Whether a probe speaking plain TCP to the port gets a Welcome: over TLS
/// it cannot, its Hello is not a TLS record.
fn plain_probe_is_welcomed(collector: &Collector) -> bool {
    use std::io::{Read, Write};
    let mut probe = connect(collector);
    let _ = probe.write_all(&hello_as("plain", &format!("{:032x}", 77), 77));
    let mut reply = [0u8; 256];
    // A TLS server answers garbage with an alert or a close; a Welcome is a
    // meshwatch frame: a 4-byte length, then protobuf.
    match probe.read(&mut reply) {
        Ok(n) if n > 4 => reply[0] == 0 && reply[4] != 0x15,
        _ => false,
    }
}

fn tls_args<'a>(pki: &'a Pki, files: &'a mut Vec<String>) -> Vec<&'a str> {
    files.clear();
    files.extend([pki.file("server.pem"), pki.file("server.key")]);
    vec!["--tls-cert", &files[0], "--tls-key", &files[1]]
}

#[test]
fn probes_and_the_cli_speak_tls_and_plain_clients_are_refused() {
    let pki = Pki::new();
    let mut files = Vec::new();
    let collector = Collector::start_with(None, &tls_args(&pki, &mut files));
    let ca = pki.file("ca.pem");
    let _service = Service::start_with(&collector, "sealed", 1, &[], &[("MESHWATCH_TLS_CA", &ca)]);

    let base = https(&collector);
    let instance = wait_listed(&base, &["--tls-ca", &ca], "sealed");
    assert!(
        instance["headline"]["rss_bytes"].as_f64().unwrap_or(0.0) > 0.0,
        "{instance}"
    );

    // A probe that trusts another CA refuses this collector: it says why,
    // and never reports.
    let other = Pki::new();
    let other_ca = other.file("ca.pem");
    let doubter = Service::start_with(
        &collector,
        "doubter",
        1,
        &[],
        &[("MESHWATCH_TLS_CA", &other_ca)],
    );
    wait_for(
        "the probe's refusal in its log",
        Duration::from_secs(20),
        || {
            let log = doubter.process.stderr();
            log.contains("cannot reach the collector: invalid peer certificate")
                .then_some(())
        },
    );
    let listed = status(&base, &["--tls-ca", &ca]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        listed["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["service"] != "doubter"),
        "{listed:#}"
    );

    // The CLI checks the collector's certificate: without the CA it refuses.
    let unverified = status(&base, &[]);
    assert!(!unverified.status.success());
    let said = String::from_utf8_lossy(&unverified.stderr);
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    // Plain HTTP to the TLS port gets no answer.
    assert!(!status(&collector.http, &[]).status.success());

    assert!(!plain_probe_is_welcomed(&collector), "plain probe welcomed");
    wait_for(
        "the failed handshake counted",
        Duration::from_secs(10),
        || {
            https_get(&base, "/metrics", &ca)
                .lines()
                .any(|line| {
                    line.starts_with(
                        "meshwatch_collector_frames_rejected_total{reason=\"tls_handshake\"}",
                    )
                })
                .then_some(())
        },
    );
}

/// GETs `path` over HTTPS, trusting only the CA in `ca`.
fn https_get(base: &str, path: &str, ca: &str) -> String {
    let pem = std::fs::read(ca).unwrap();
    let roots: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
    agent
        .get(format!("{base}{path}"))
        .call()
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

#[test]
fn with_a_client_ca_only_clients_holding_a_certificate_get_in() {
    let pki = Pki::new();
    let mut files = Vec::new();
    let mut args = tls_args(&pki, &mut files);
    let client_ca = pki.file("ca.pem");
    args.extend(["--tls-client-ca", &client_ca]);
    let collector = Collector::start_with(None, &args);
    let ca = pki.file("ca.pem");
    let (cert, key) = (pki.file("client.pem"), pki.file("client.key"));

    let _trusted = Service::start_with(
        &collector,
        "badged",
        1,
        &[],
        &[
            ("MESHWATCH_TLS_CA", &ca),
            ("MESHWATCH_TLS_CERT", &cert),
            ("MESHWATCH_TLS_KEY", &key),
        ],
    );
    let _stranger =
        Service::start_with(&collector, "stranger", 1, &[], &[("MESHWATCH_TLS_CA", &ca)]);
    let base = https(&collector);
    let with_cert = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    wait_listed(&base, &with_cert, "badged");

    // The CLI without a certificate is refused at the handshake.
    let refused = status(&base, &["--tls-ca", &ca]);
    assert!(
        !refused.status.success(),
        "read the API without a certificate"
    );

    // The probe without one never gets in, while the other stays.
    std::thread::sleep(Duration::from_secs(3));
    let out = status(&base, &with_cert);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services: Vec<&str> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["service"].as_str())
        .collect();
    assert!(services.contains(&"badged"), "{services:?}");
    assert!(!services.contains(&"stranger"), "{services:?}");
}
