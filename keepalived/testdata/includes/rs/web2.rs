real_server "192.0.2.2" {
    TCP_CHECK {
    }
}
