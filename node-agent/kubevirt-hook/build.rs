//! Compiles the KubeVirt hook protos (`proto/`, see its README) with the pure-Rust `protox`:
//! no `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/info/api_info.proto",
        "proto/v1alpha2/api_v1alpha2.proto",
        "proto/v1alpha3/api_v1alpha3.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
