//! junit.xml: one suite per profile, a case per phase (every attempt of a healed phase shown
//! as a rerun), a case per check, and one for the profile as a whole.

use super::{Report, Status};

impl Report {
    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
        let mut report = quick_junit::Report::new(format!("nixtest {}", self.run_id));
        for p in &self.profiles {
            let mut suite = TestSuite::new(p.name.clone());
            for ph in &p.phases {
                let status = match ph.status {
                    Status::Passed => TestCaseStatus::success(),
                    Status::Failed => {
                        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        s.set_message(format!(
                            "phase {} failed after {} attempt(s)",
                            ph.name, ph.attempts
                        ));
                        s
                    }
                    Status::Error => TestCaseStatus::non_success(NonSuccessKind::Error),
                };
                let mut case = TestCase::new(ph.name.clone(), status);
                case.set_classname(format!("{}.phases", p.name));
                case.set_time(std::time::Duration::from_millis(ph.duration_ms));
                suite.add_test_case(case);
            }
            for c in &p.verification {
                let status = if c.status == Status::Passed {
                    TestCaseStatus::success()
                } else {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(c.output.clone());
                    s
                };
                let mut case = TestCase::new(format!("verify {}", c.check), status);
                case.set_classname(format!("{}.verification", p.name));
                suite.add_test_case(case);
            }
            let overall = match p.status {
                Status::Passed => TestCaseStatus::success(),
                Status::Failed => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(
                        p.error
                            .clone()
                            .unwrap_or_else(|| "the profile failed".into()),
                    );
                    s
                }
                Status::Error => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(p.error.clone().unwrap_or_default());
                    s
                }
            };
            let mut case = TestCase::new(format!("profile {}", p.name), overall);
            case.set_classname(p.name.clone());
            case.set_time(std::time::Duration::from_millis(p.duration_ms));
            suite.add_test_case(case);
            report.add_test_suite(suite);
        }
        report.to_string().expect("JUnit serialises")
    }
}
