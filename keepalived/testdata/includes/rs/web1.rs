real_server 192.0.2.1 80 { TCP_CHECK { connect_timeout 3 } }
