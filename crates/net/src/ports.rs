//! Published ports: docker's `-p [hostIP:][hostPort:]containerPort[/tcp|udp]`, and a
//! check that the host port is free.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    /// The host address it is published on (all of the host's when absent).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port (0 before a free one is chosen).
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

fn port(spec: &str, what: &str, s: &str) -> Result<u16> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Error::Invalid(format!(
            "-p {spec}: {what} {s:?} is not a port (1-65535)"
        ))),
    }
}

/// Parses one `-p` value.
pub fn parse(spec: &str) -> Result<PortMap> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some((_, p)) => {
            return Err(Error::Invalid(format!(
                "-p {spec}: protocol {p:?} is not tcp or udp"
            )))
        }
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host_port, container_port) = match parts.as_slice() {
        [c] => (None, 0, port(spec, "container port", c)?),
        [h, c] => (
            None,
            port(spec, "host port", h)?,
            port(spec, "container port", c)?,
        ),
        [ip, h, c] => {
            let ip: Option<Ipv4Addr> = if ip.is_empty() || *ip == "0.0.0.0" {
                None
            } else {
                Some(ip.parse().map_err(|_| {
                    Error::Invalid(format!(
                        "-p {spec}: host address {ip:?} is not an IPv4 address"
                    ))
                })?)
            };
            let hp = if h.is_empty() {
                0
            } else {
                port(spec, "host port", h)?
            };
            (ip, hp, port(spec, "container port", c)?)
        }
        _ => {
            return Err(Error::Invalid(format!(
                "-p {spec}: expected [hostIP:][hostPort:]containerPort[/tcp|udp]"
            )))
        }
    };
    Ok(PortMap {
        host_ip,
        host_port,
        container_port,
        proto,
    })
}

/// Gives ports without a host port a free one, and checks that the others are not in
/// use by a program on the host (a published port would silently steal its traffic).
pub fn claim(ports: &mut [PortMap]) -> Result<()> {
    for p in ports.iter_mut() {
        let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let bound = match p.proto {
            Proto::Tcp => std::net::TcpListener::bind((ip, p.host_port)).map(|l| l.local_addr()),
            Proto::Udp => std::net::UdpSocket::bind((ip, p.host_port)).map(|s| s.local_addr()),
        };
        match bound {
            Ok(Ok(addr)) => p.host_port = addr.port(),
            Ok(Err(e)) | Err(e) => {
                return Err(if e.kind() == std::io::ErrorKind::AddrInUse {
                    Error::Conflict(format!(
                        "host port {ip}:{}/{} is already in use by a program on the host: choose another host port",
                        p.host_port, p.proto
                    ))
                } else {
                    Error::Invalid(format!(
                        "host address {ip}:{}/{}: {e}",
                        p.host_port, p.proto
                    ))
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_forms_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse("8080:80").unwrap(),
            PortMap {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                proto: Proto::Tcp
            }
        );
        let p = parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (5353, 53, Proto::Udp)
        );
        assert_eq!(parse("80").unwrap().host_port, 0);
        assert_eq!(parse("127.0.0.1::80").unwrap().host_port, 0);
        for (bad, says) in [
            ("80/sctp", "protocol \"sctp\""),
            ("70000:80", "host port \"70000\""),
            ("x:80", "host port \"x\""),
            ("1.2.3:80:80", "host address \"1.2.3\""),
            ("1:2:3:4", "expected [hostIP:]"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
