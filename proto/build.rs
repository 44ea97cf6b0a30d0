//! Compiles the gRPC contracts with protox (no system protoc) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "halyard/ca/v1/types.proto",
        "halyard/ca/v1/node.proto",
        "halyard/ca/v1/svid.proto",
        "halyard/ca/v1/trust.proto",
        "halyard/ca/v1/admin.proto",
        "istio/security/v1alpha1/ca.proto",
        "spiffe/workload/workload.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
