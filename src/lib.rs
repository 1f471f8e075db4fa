pub mod proto {
    pub mod kv {
        tonic::include_proto!("kvstore.v1");
    }
}
