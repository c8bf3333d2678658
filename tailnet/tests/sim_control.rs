//! The async shell against a simulated control server built in this test
//! from the crate's own server-side pieces (`noise::respond`, the record
//! layer, `h2`'s server): `/key`, the `/ts2021` upgrade with an early
//! payload in the same segment, register, and a streamed map with a
//! keep-alive and a delta. The real-server test is
//! tests/e2e/test_tailnet_control.py (Headscale, tailscaled).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use meshbridge_tailnet::client::{fetch_control_key, ControlClient, ControlUrl, NoiseIo};
use meshbridge_tailnet::control::{self, NodeIdentity, RegisterNext};
use meshbridge_tailnet::keys::{MachinePrivate, MachinePublic, NodeKeys};
use meshbridge_tailnet::mapstream::encode_frame;
use meshbridge_tailnet::netmap::{Applied, Netmap};
use meshbridge_tailnet::noise::respond;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn read_head(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before the end of its request head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..i].to_vec()).unwrap();
            return (head, buf[i + 4..].to_vec());
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} header in {head}"))
}

fn peer_json(id: i64, key: u8) -> String {
    format!(
        r#"{{"ID":{id},"Name":"peer{id}.tailnet.test.","Key":"nodekey:{k}","DiscoKey":"discokey:{k}",
            "Addresses":["100.64.0.{id}/32"],"AllowedIPs":null,"Endpoints":["192.0.2.{id}:41641"],"HomeDERP":900,"Online":true}}"#,
        k = hex::encode([key; 32])
    )
}

/// One control connection, server side: upgrade, Noise, HTTP/2.
async fn serve_noise(mut tcp: TcpStream, control: MachinePrivate, expect_machine: MachinePublic) {
    let (head, rest) = read_head(&mut tcp).await;
    assert!(head.starts_with("POST /ts2021 HTTP/1.1\r\n"), "{head}");
    assert_eq!(header(&head, "Upgrade"), "tailscale-control-protocol");
    let init = base64::engine::general_purpose::STANDARD
        .decode(header(&head, "X-Tailscale-Handshake"))
        .unwrap();
    assert!(rest.is_empty());
    let eph = MachinePrivate::generate(&mut rand::rngs::StdRng::seed_from_u64(99));
    let (resp, mut transport, machine) = respond(&control, &init, eph).unwrap();
    assert_eq!(
        machine, expect_machine,
        "the Noise session proves the client's machine key"
    );
    // 101, handshake response and early payload in one write, as Headscale's
    // corked connection sends them.
    let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n".to_vec();
    out.extend_from_slice(&resp);
    let json = format!("{{\"nodeKeyChallenge\":\"chalpub:{}\"}}", "ab".repeat(32));
    let mut early = b"\xff\xff\xffTS".to_vec();
    early.extend_from_slice(&(json.len() as u32).to_be_bytes());
    early.extend_from_slice(json.as_bytes());
    transport.encrypt(&early, &mut out).unwrap();
    tcp.write_all(&out).await.unwrap();

    let io = NoiseIo::from_parts(tcp, transport, &[], false).unwrap();
    let mut h2 = h2::server::handshake(io).await.unwrap();
    while let Some(req) = h2.accept().await {
        let (req, mut respond) = req.unwrap();
        let path = req.uri().path().to_string();
        let mut body = req.into_body();
        let mut json = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            json.extend_from_slice(&chunk);
        }
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let reply = http::Response::builder().status(200).body(()).unwrap();
        match path.as_str() {
            "/machine/register" => {
                let answer = if v["Auth"]["AuthKey"] == "good-key" {
                    r#"{"MachineAuthorized":true,"User":{"ID":1},"Login":{"LoginName":"alice"}}"#
                } else {
                    r#"{"AuthURL":"http://control/register/abc"}"#
                };
                let mut send = respond.send_response(reply, false).unwrap();
                send.send_data(Bytes::from(answer), true).unwrap();
            }
            "/machine/map" => {
                assert_eq!(v["Stream"], true);
                assert_eq!(v["KeepAlive"], true);
                assert!(v.get("Compress").is_none(), "no compression asked");
                let mut send = respond.send_response(reply, false).unwrap();
                let first = format!(
                    r#"{{"Node":{{"ID":1,"Name":"box.tailnet.test.","Key":{},"Addresses":["100.64.0.1/32"]}},
                        "DERPMap":{{"Regions":{{"900":{{"RegionID":900,"Nodes":[]}}}}}},
                        "Peers":[{},{}],"Domain":"tailnet.test"}}"#,
                    v["NodeKey"],
                    peer_json(2, 2),
                    peer_json(3, 3)
                );
                let mut frames = Vec::new();
                encode_frame(first.as_bytes(), &mut frames);
                encode_frame(br#"{"KeepAlive":true}"#, &mut frames);
                encode_frame(
                    br#"{"PeersRemoved":[3],"PeersChangedPatch":[{"NodeID":2,"DERPRegion":901}]}"#,
                    &mut frames,
                );
                // Split across DATA frames at odd places.
                let (a, b) = frames.split_at(frames.len() / 3);
                send.send_data(Bytes::copy_from_slice(a), false).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                send.send_data(Bytes::copy_from_slice(b), true).unwrap();
            }
            other => panic!("unexpected request {other}"),
        }
    }
}

#[tokio::test]
async fn register_and_stream_the_map_from_a_simulated_control_server() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let control = MachinePrivate::generate(&mut rng);
    let keys = NodeKeys::generate(&mut rng);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = ControlUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();

    let control_pub = control.public();
    let machine_pub = keys.machine_key.public();
    let server = tokio::spawn(async move {
        // 1: GET /key
        let (mut tcp, _) = listener.accept().await.unwrap();
        let (head, _) = read_head(&mut tcp).await;
        assert!(head.starts_with("GET /key?v=119 HTTP/1.1\r\n"), "{head}");
        let body = format!(
            "{{\"legacyPublicKey\":\"mkey:{}\",\"publicKey\":\"{}\"}}\n",
            "00".repeat(32),
            control_pub
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(resp.as_bytes()).await.unwrap();
        drop(tcp);
        // 2: the Noise connection
        let (tcp, _) = listener.accept().await.unwrap();
        serve_noise(tcp, control, machine_pub).await;
    });

    let got = fetch_control_key(&url, None).await.unwrap();
    assert_eq!(got.public_key, control_pub);
    let mut client = ControlClient::connect(
        &url,
        None,
        &keys.machine_key,
        got.public_key,
        MachinePrivate::generate(&mut rng),
    )
    .await
    .unwrap();

    let id = NodeIdentity {
        hostname: "box".into(),
        ..Default::default()
    };
    // Without a key the server asks for a login; with it, it authorizes.
    let no_key = control::register_request(&keys, &url.url, &id, None);
    let resp = client.register(&no_key).await.unwrap();
    assert_eq!(
        control::after_register(&no_key, &resp, None),
        RegisterNext::Login("http://control/register/abc".into())
    );
    let with_key = control::register_request(&keys, &url.url, &id, Some("good-key"));
    let resp = client.register(&with_key).await.unwrap();
    assert_eq!(
        control::after_register(&with_key, &resp, Some("good-key")),
        RegisterNext::Authorized
    );
    let early = client.early_payload().expect("early payload seen");
    assert_eq!(early.node_key_challenge.unwrap().as_bytes(), &[0xab; 32]);

    let mut stream = client
        .map_stream(&control::map_request(&keys, &id, &[]))
        .await
        .unwrap();
    let mut nm = Netmap::new();
    let mut applied = Vec::new();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
    {
        applied.push(nm.apply(msg).unwrap());
        if applied.len() == 1 {
            let ids: Vec<i64> = nm.peers().iter().map(|p| p.id).collect();
            assert_eq!(ids, vec![2, 3]);
        }
    }
    assert_eq!(
        applied,
        vec![Applied::Updated, Applied::KeepAlive, Applied::Updated]
    );
    assert_eq!(nm.self_node().unwrap().key, Some(keys.node_key.public()));
    let peers = nm.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].derp_region, Some(901));
    assert_eq!(peers[0].allowed_ips, peers[0].addresses);
    assert_eq!(peers[0].endpoints, vec!["192.0.2.2:41641".parse().unwrap()]);
    assert_eq!(nm.domain(), "tailnet.test");
    drop(stream);
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}
