//! What shipit says to HAProxy's runtime API and reads back: the commands that move
//! traffic between slots, and the counters (`show stat`) a step is judged by.

use super::proxy::Slots;
use crate::config::{AnalysisConfig, ProxyMode};

/// Give the new slot `share` percent of new requests and the old slot the rest.
pub fn shift(s: &Slots, new: u16, share: u32, old: Option<u16>) -> String {
    let be = s.backend();
    let mut c = format!("set server {be}/{} weight {share}", s.server(new));
    if let Some(old) = old {
        c.push_str(&format!(
            "; set server {be}/{} weight {}",
            s.server(old),
            100 - share.min(100)
        ));
    }
    c
}

/// What the runtime API answered to [`shift`]: empty lines when it took every command.
pub fn shifted(answer: &str) -> Result<(), String> {
    let said: Vec<&str> = answer
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if said.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "HAProxy refused to move traffic: {}",
            said.join("; ")
        ))
    }
}

/// The counters of one slot's server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Connections open now.
    pub scur: u64,
    /// Connections made, in all.
    pub stot: u64,
    /// Failed connections to the slot.
    pub econ: u64,
    /// Broken responses (the slot closed or reset mid-answer).
    pub eresp: u64,
    /// Answers by class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub hrsp: [u64; 6],
    /// HAProxy's sliding average of response times, ms ([`SAMPLES`] requests).
    pub rtime: u64,
    pub weight: u64,
}

/// Slot `port`'s counters in a `show stat` answer.
pub fn counters(s: &Slots, port: u16, stat: &str) -> Option<Counters> {
    let mut lines = stat.lines();
    let header: Vec<&str> = lines
        .next()?
        .trim_start_matches('#')
        .trim()
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let server = s.server(port);
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.first() != Some(&s.backend()) || f.get(1) != Some(&server.as_str()) {
            continue;
        }
        let n = |name: &str| {
            col(name)
                .and_then(|i| f.get(i))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        return Some(Counters {
            scur: n("scur"),
            stot: n("stot"),
            econ: n("econ"),
            eresp: n("eresp"),
            hrsp: [
                n("hrsp_1xx"),
                n("hrsp_2xx"),
                n("hrsp_3xx"),
                n("hrsp_4xx"),
                n("hrsp_5xx"),
                n("hrsp_other"),
            ],
            rtime: n("rtime"),
            weight: n("weight"),
        });
    }
    None
}

/// How many requests HAProxy's sliding averages (`rtime`) span (`TIME_STATS_SAMPLES`).
pub const SAMPLES: f64 = 512.0;

/// The mean response time of the `k` requests between two readings of HAProxy's
/// sliding average (`a0` before, `a1` after, both rounded up to whole ms): each request
/// moves the average by 1/[`SAMPLES`] of its distance, so after `k` of them
/// `a1 = a0 r + m (1 - r)` with `r = (1 - 1/SAMPLES)^k`. Good to about SAMPLES/k ms: a
/// step needs a few dozen requests for a sharp figure.
pub fn window_mean_ms(a0: u64, a1: u64, k: u64) -> u64 {
    if k == 0 {
        return 0;
    }
    let r = (1.0 - 1.0 / SAMPLES).powf(k as f64);
    let centre = |a: u64| if a == 0 { 0.0 } else { a as f64 - 0.5 };
    let m = (centre(a1) - centre(a0) * r) / (1.0 - r);
    m.max(0.0).round() as u64
}

/// What a slot did between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Requests answered or attempted (`http`), connections (`tcp`).
    pub requests: u64,
    pub errors: u64,
    /// The mean response time over the window, ms (`http`; see [`window_mean_ms`]).
    pub avg_ms: u64,
}

impl Window {
    pub fn between(mode: ProxyMode, before: &Counters, after: &Counters) -> Window {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let failed = d(after.econ, before.econ) + d(after.eresp, before.eresp);
        match mode {
            ProxyMode::Http => {
                let answered: u64 = (0..6).map(|i| d(after.hrsp[i], before.hrsp[i])).sum();
                Window {
                    requests: answered + failed,
                    errors: d(after.hrsp[4], before.hrsp[4]) + failed,
                    avg_ms: window_mean_ms(before.rtime, after.rtime, answered),
                }
            }
            ProxyMode::Tcp => Window {
                requests: d(after.stot, before.stot) + d(after.econ, before.econ),
                errors: failed,
                avg_ms: 0,
            },
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }

    /// How the window went, in words.
    pub fn describe(&self, mode: ProxyMode) -> String {
        let what = match mode {
            ProxyMode::Http => "requests",
            ProxyMode::Tcp => "connections",
        };
        let mut t = format!(
            "{} {what}, {} failed ({:.2}%)",
            self.requests,
            self.errors,
            self.error_rate()
        );
        if mode == ProxyMode::Http && self.requests > 0 {
            t.push_str(&format!(", average response {} ms", self.avg_ms));
        }
        t
    }

    /// `Err` names the threshold the window broke, with the figures.
    pub fn judge(&self, mode: ProxyMode, a: &AnalysisConfig) -> Result<(), String> {
        if self.errors > 0 && self.error_rate() > a.max_error_rate {
            return Err(format!(
                "error rate {:.2}% is over proxy.analysis.max_error_rate {}% ({})",
                self.error_rate(),
                a.max_error_rate,
                self.describe(mode)
            ));
        }
        if let Some(max) = a.max_response_time
            && mode == ProxyMode::Http
            && self.requests > 0
            && self.avg_ms > max.0.as_millis() as u64
        {
            return Err(format!(
                "average response time {} ms is over proxy.analysis.max_response_time {} ({})",
                self.avg_ms,
                max,
                self.describe(mode)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;

    fn slots() -> Slots<'static> {
        Slots {
            app: "hello",
            deploy_to: "/opt/hello",
            service: "hello",
            sudo: true,
            listen: 80,
            ports: [9001, 9002],
            mode: ProxyMode::Http,
            drain_secs: 30,
        }
    }

    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,\
econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,\
sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,\
hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,\
cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,\
rtime,ttime\n\
hello,FRONTEND,,,0,1,9985,4,328,300,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,4,0,4,,,,0,4,0,0,0,0,,4,4,\
4,,,0,0,0,0,,,,,,,,\n\
hello,slot9001,0,0,2,1,,40,328,300,,0,,1,0,0,0,no check,50,1,0,,,1,,,1,3,1,,4,,2,4,,4,,,,0,37,\
0,0,2,0,,,,4,0,0,,,,,0,,,0,0,7,9\n";

    #[test]
    fn reads_a_slots_counters_and_judges_a_window() {
        let s = slots();
        let c = counters(&s, 9001, STAT).unwrap();
        assert_eq!(
            (c.scur, c.stot, c.econ, c.weight, c.rtime),
            (2, 40, 1, 50, 7)
        );
        assert_eq!(c.hrsp, [0, 37, 0, 0, 2, 0]);
        assert_eq!(counters(&s, 9002, STAT), None);
        let w = Window::between(ProxyMode::Http, &Counters::default(), &c);
        assert_eq!((w.requests, w.errors), (40, 3));
        let a = AnalysisConfig {
            interval: Duration(std::time::Duration::from_secs(1)),
            max_error_rate: 1.0,
            max_response_time: Some(Duration(std::time::Duration::from_millis(5))),
        };
        let e = w.judge(ProxyMode::Http, &a).unwrap_err();
        assert!(e.contains("7.50%") && e.contains("max_error_rate"), "{e}");
        let a = AnalysisConfig {
            max_error_rate: 10.0,
            ..a
        };
        let e = w.judge(ProxyMode::Http, &a).unwrap_err();
        assert!(e.contains("max_response_time"), "{e}");
        let tcp = Window::between(ProxyMode::Tcp, &Counters::default(), &c);
        assert_eq!((tcp.requests, tcp.errors), (41, 1));
        // HAProxy's sliding average, undone: 10 requests of 300 ms move it from 0 to 6.
        assert_eq!(window_mean_ms(0, 6, 10), 284);
        assert_eq!(window_mean_ms(6, 21, 26), 308);
        assert_eq!(window_mean_ms(5, 5, 0), 0);
        // Nothing sent to the slot is no failure.
        let idle = Window::between(ProxyMode::Http, &c, &c);
        assert!(idle.judge(ProxyMode::Http, &a).is_ok());
    }

    #[test]
    fn commands() {
        let s = slots();
        assert_eq!(
            shift(&s, 9002, 10, Some(9001)),
            "set server hello/slot9002 weight 10; set server hello/slot9001 weight 90"
        );
        assert_eq!(
            shift(&s, 9001, 100, None),
            "set server hello/slot9001 weight 100"
        );
        assert!(shifted("\n\n").is_ok());
        assert!(shifted("No such server.\n").is_err());
    }
}
