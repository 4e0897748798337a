//! Tying the agent's life to its parent's, for supervisors that start it as
//! a child (`tether quickstart`): when the parent dies, even by SIGKILL,
//! the agent stops as on SIGTERM instead of retrying a dead server forever.

use tether_wire::ErrorCode;

use crate::error::Failure;

/// Asks the kernel to send this process SIGTERM (the agent's clean stop)
/// when its parent dies, then checks that the parent is still `parent`.
///
/// `Ok(false)`: the parent died before the request took effect, so no
/// signal will ever come; the caller should not start. An error: `parent`
/// is alive but is not this process's parent, or the request failed.
pub fn exit_with_parent(parent: u32) -> Result<bool, Failure> {
    let invalid = |why: String| Failure::new(ErrorCode::AgentParentInvalid, why);
    #[cfg(target_os = "linux")]
    {
        use nix::sys::signal::Signal;
        nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
            .map_err(|e| invalid(format!("setting the parent-death signal failed: {e}")))?;
    }
    #[cfg(not(target_os = "linux"))]
    {
        return Err(invalid(
            "--exit-with-parent needs Linux's parent-death signal".to_owned(),
        ));
    }
    // Checked after the request, so a parent that dies in between is seen
    // here (we were reparented) rather than missed.
    let actual = nix::unistd::getppid().as_raw();
    if u32::try_from(actual).ok() == Some(parent) {
        return Ok(true);
    }
    if std::path::Path::new(&format!("/proc/{parent}")).exists() {
        Err(invalid(format!(
            "--exit-with-parent {parent} is not this agent's parent (that is {actual})"
        )))
    } else {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_parent_is_accepted_and_another_live_process_refused() {
        let parent = u32::try_from(nix::unistd::getppid().as_raw()).expect("a pid");
        assert!(exit_with_parent(parent).expect("our parent"));
        // PID 1 is alive and (under a test runner) not our parent.
        if parent != 1 {
            let e = exit_with_parent(1).expect_err("not our parent");
            assert_eq!(e.code, ErrorCode::AgentParentInvalid);
            assert!(
                e.message.contains("is not this agent's parent"),
                "{}",
                e.message
            );
        }
        // Undo: the test process must not die with the test runner's thread.
        #[cfg(target_os = "linux")]
        nix::sys::prctl::set_pdeathsig(None).expect("cleared");
    }
}
