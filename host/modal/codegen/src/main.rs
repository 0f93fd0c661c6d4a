fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (subset, out) = (&args[1], &args[2]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out)
        .compile_protos(
            &[
                format!("{subset}/modal_proto/api.proto"),
                format!("{subset}/modal_proto/task_command_router.proto"),
            ],
            &[subset.to_string(), "/usr/include".to_string()],
        )
        .expect("codegen");
}
