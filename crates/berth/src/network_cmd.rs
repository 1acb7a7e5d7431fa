//! `berth network create|ls|inspect|rm|prune`: bridge networks for containers.

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};

use berth_net::network::{Network, Networks, NewNetwork, DEFAULT};

use crate::container_cmd::engine;
use crate::table::Table;
use crate::Ctx;

/// `berth network` subcommands.
#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network (containers on it reach each other by name).
    Create {
        /// Subnet in CIDR form (default: the next free 10.90.N.0/24); give an IPv6 one
        /// too (a /64 to /96) for IPv6.
        #[arg(long)]
        subnet: Vec<String>,
        /// IPv6 as well (default subnet: the next free fdb7:0:N::/64).
        #[arg(long)]
        ipv6: bool,
        /// Gateway address (default: the subnet's first).
        #[arg(long)]
        gateway: Option<String>,
        /// Driver: only bridge.
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Driver options: mtu=N (also as com.docker.network.driver.mtu=N).
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        /// Labels: KEY=VALUE.
        #[arg(long)]
        label: Vec<String>,
        /// Name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only IDs.
        #[arg(short, long)]
        quiet: bool,
        /// json, or a template like {{.Name}} {{.Subnet}}.
        #[arg(long)]
        format: Option<String>,
    },
    /// Show networks as JSON, with their containers.
    Inspect {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no container uses.
    #[command(alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a running container to a further network (interface eth1, eth2...).
    Connect {
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// Disconnect a container from a further network.
    Disconnect {
        /// Accepted for docker compatibility.
        #[arg(short, long)]
        force: bool,
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// Remove every network no container uses (the default one stays).
    Prune {
        /// Accepted for docker compatibility.
        #[arg(short, long)]
        force: bool,
    },
}

fn inspect_json(ctx: &Ctx, nets: &Networks, n: &Network) -> anyhow::Result<Value> {
    let e = engine(ctx)?;
    let mut containers = serde_json::Map::new();
    for (ip, holder) in nets.leases(&n.name).all() {
        // Leases are held by sandboxes: a container's own, or a pod's.
        let c = e.container_of_sandbox(&holder);
        let name = c.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        let att = c.as_ref().and_then(|c| e.attachment(c));
        containers.insert(
            holder.clone(),
            json!({
                "Name": name,
                "EndpointID": att.as_ref().map(|a| a.host_veth.clone()).unwrap_or_default(),
                "MacAddress": att.as_ref().map(|a| a.mac.clone()).unwrap_or_default(),
                "IPv4Address": format!("{ip}/{}", n.subnet.prefix_len()),
            }),
        );
    }
    Ok(json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": n.subnet6.is_some(),
        "IPAM": {"Driver": "default", "Config": std::iter::once(json!({"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}))
            .chain(n.subnet6.map(|s| json!({"Subnet": s.to_string(), "Gateway": n.gateway6().map(|g| g.to_string()).unwrap_or_default()})))
            .collect::<Vec<_>>()},
        "Internal": false,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": n.bridge, "com.docker.network.driver.mtu": n.mtu.to_string()},
        "Labels": n.labels,
    }))
}

/// `berth network`.
pub fn network(ctx: &Ctx, c: NetworkCommand) -> anyhow::Result<()> {
    let nets = Networks::host();
    match c {
        NetworkCommand::Create {
            subnet,
            ipv6,
            gateway,
            driver,
            opt,
            label,
            name,
        } => {
            if driver != "bridge" {
                bail!("driver {driver:?} is not supported: berth has bridge networks only");
            }
            let mut mtu = None;
            for o in &opt {
                match o.split_once('=') {
                    Some(("mtu" | "com.docker.network.driver.mtu", v)) => {
                        mtu =
                            Some(v.parse().map_err(|_| {
                                anyhow::anyhow!("--opt {o}: the MTU must be a number")
                            })?)
                    }
                    _ => bail!("--opt {o:?}: berth knows mtu=N only"),
                }
            }
            let labels = label
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l, ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            let (v6, v4): (Vec<String>, Vec<String>) =
                subnet.into_iter().partition(|s| s.contains(':'));
            if v4.len() > 1 || v6.len() > 1 {
                bail!("--subnet: give at most one IPv4 and one IPv6 subnet");
            }
            let n = nets.create(&NewNetwork {
                no_dns: false,
                name,
                subnet: v4.into_iter().next(),
                gateway,
                mtu,
                labels,
                ipv6: ipv6 || !v6.is_empty(),
                subnet6: v6.into_iter().next(),
            })?;
            println!("{}", n.id);
        }
        NetworkCommand::Ls { quiet, format } => {
            // The default network always shows, as docker's does.
            nets.get(DEFAULT)?;
            let all = nets.list()?;
            if quiet {
                for n in &all {
                    println!("{}", &n.id[..12]);
                }
                return Ok(());
            }
            let rows: Vec<Value> = all
                .iter()
                .map(|n| {
                    json!({"ID": &n.id[..12], "Name": n.name, "Driver": "bridge", "Scope": "local",
                           "Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string(), "Bridge": n.bridge})
                })
                .collect();
            match format.as_deref() {
                Some("json") => rows.iter().for_each(|r| println!("{r}")),
                Some(t) => {
                    for r in &rows {
                        println!("{}", crate::image_cmd::apply_template(r, t)?);
                    }
                }
                None => {
                    let mut t = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"]);
                    for r in &rows {
                        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                        t.row(vec![
                            s("ID"),
                            s("Name"),
                            s("Driver"),
                            s("Scope"),
                            s("Subnet"),
                        ]);
                    }
                    print!("{}", t.render());
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in &names {
                out.push(inspect_json(ctx, &nets, &nets.get(name)?)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Rm { names } => {
            let mut failed = 0;
            for name in &names {
                match nets.remove(name) {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} networks could not be removed", names.len());
            }
        }
        NetworkCommand::Connect { network, container } => {
            let e = engine(ctx)?;
            let rec = e.find(&container)?;
            e.connect(&rec, &network)?;
        }
        NetworkCommand::Disconnect {
            network, container, ..
        } => {
            let e = engine(ctx)?;
            let rec = e.find(&container)?;
            e.disconnect(&rec, &network)?;
        }
        NetworkCommand::Prune { .. } => {
            println!("Deleted Networks:");
            for n in nets.list()? {
                if n.name != DEFAULT && !nets.leases(&n.name).any() {
                    nets.remove(&n.name)?;
                    println!("{}", n.name);
                }
            }
        }
    }
    Ok(())
}
