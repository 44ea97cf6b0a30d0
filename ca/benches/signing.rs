//! In-process signing against the crypto limit on one core.
//!
//! - `svid/parse_verify_sign`: what the CA does per request — parse a PEM-less DER CSR, check its
//!   key, verify its signature, check the grant, sign the leaf (EC P-256 everywhere).
//! - `svid/parse_verify_sign_256`: the same over 256 distinct CSRs in turn, as the load generator
//!   sends them (`--pool 256`), to check that one CSR over and over does not flatter the line
//!   above (alternating runs put the two within each other's noise).
//! - `ring/p256_sign_verify`: one raw ring ECDSA P-256 signature and one verification: the floor
//!   under the line above, which also verifies one signature and makes one.
//!
//! Run: `taskset -c 1 cargo bench -p halyard-ca --bench signing` (see BENCHMARKS.md).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use halyard_ca::authority::{Csr, Grant, KeyPolicy};
use halyard_ca::testing::{CsrSpec, TestPki};
use halyard_proto::SpiffeId;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

fn svid(c: &mut Criterion) {
    let pki = TestPki::new("cluster.local");
    let csr = CsrSpec::for_id(ID).der();
    let keys = KeyPolicy::default();
    let grant = Grant::new(SpiffeId::new(ID).unwrap());
    let mut group = c.benchmark_group("svid");
    group.throughput(Throughput::Elements(1));
    // What the CA does per request, from the CSR's DER to the signed leaf.
    let parse_verify_sign = |der: &[u8]| {
        let csr = Csr::parse(black_box(der), &keys).unwrap();
        pki.authority
            .sign_svid(&csr, &grant, None, SystemTime::now())
            .unwrap()
    };
    group.bench_function("parse_verify_sign", |b| b.iter(|| parse_verify_sign(&csr)));
    let pool: Vec<Vec<u8>> = (0..256).map(|_| CsrSpec::for_id(ID).der()).collect();
    let mut next = pool.iter().cycle();
    group.bench_function("parse_verify_sign_256", |b| {
        b.iter(|| parse_verify_sign(next.next().unwrap()))
    });
    group.bench_function("parse_verify", |b| {
        b.iter(|| Csr::parse(black_box(&csr), &keys).unwrap())
    });
    let parsed = Csr::parse(&csr, &keys).unwrap();
    group.bench_function("sign", |b| {
        b.iter(|| {
            pki.authority
                .sign_svid(black_box(&parsed), &grant, None, SystemTime::now())
                .unwrap()
        })
    });
    group.finish();
}

fn ring_limit(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        key.public_key().as_ref().to_vec(),
    );
    // About the size of a leaf's to-be-signed part.
    let message = vec![0x5a_u8; 400];
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    group.bench_function("p256_sign_verify", |b| {
        b.iter(|| {
            let sig = key.sign(&rng, black_box(&message)).unwrap();
            public.verify(&message, sig.as_ref()).unwrap();
        })
    });
    group.bench_function("p256_sign", |b| {
        b.iter(|| key.sign(&rng, black_box(&message)).unwrap())
    });
    let sig = key.sign(&rng, &message).unwrap();
    group.bench_function("p256_verify", |b| {
        b.iter(|| public.verify(black_box(&message), sig.as_ref()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, svid, ring_limit);
criterion_main!(benches);
