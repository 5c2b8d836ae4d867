//! A hand-written legacy TLS ClientHello, shared by the tests that check old protocol versions
//! are refused.

/// A TLS 1.0/1.1 ClientHello, as an old client sends it: legacy version only, no
/// `supported_versions` extension, CBC suites. rustls cannot send one, so it is written by hand.
pub fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend(version); // client_version
    hello.extend([0x5a; 32]); // random
    hello.push(0); // session_id: empty
    let suites: [u8; 8] = [0x00, 0x2f, 0x00, 0x35, 0xc0, 0x13, 0xc0, 0x14];
    hello.extend((suites.len() as u16).to_be_bytes());
    hello.extend(suites);
    hello.extend([1, 0]); // compression methods: null
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend(((name.len() + 3) as u16).to_be_bytes()); // server_name_list
    sni.push(0); // host_name
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    let mut extensions = vec![0x00, 0x00]; // server_name
    extensions.extend((sni.len() as u16).to_be_bytes());
    extensions.extend(sni);
    hello.extend((extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}
