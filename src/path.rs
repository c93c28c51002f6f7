//! Paths (stopgap; replaced by the full implementation).
use crate::Result;
/// Deepest path.
pub const MAX_DEPTH: usize = 32;
/// A path in a principal's tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortalPath {
    segs: Vec<String>,
}
impl PortalPath {
    /// Root.
    pub fn root() -> Self {
        PortalPath { segs: vec![] }
    }
    /// Parse.
    pub fn parse(s: &str) -> Result<Self> {
        let mut segs: Vec<String> = vec![];
        for p in s.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    segs.pop();
                }
                n => segs.push(crate::names::canonical(n)?),
            }
        }
        Ok(PortalPath { segs })
    }
    /// Segments.
    pub fn segments(&self) -> &[String] {
        &self.segs
    }
    /// Root?
    pub fn is_root(&self) -> bool {
        self.segs.is_empty()
    }
    /// Parent.
    pub fn parent(&self) -> Option<PortalPath> {
        if self.segs.is_empty() {
            None
        } else {
            Some(PortalPath {
                segs: self.segs[..self.segs.len() - 1].to_vec(),
            })
        }
    }
    /// Last segment.
    pub fn name(&self) -> Option<&str> {
        self.segs.last().map(|s| s.as_str())
    }
    /// Child.
    pub fn join(&self, name: &str) -> Result<PortalPath> {
        let mut s = self.segs.clone();
        s.push(crate::names::canonical(name)?);
        Ok(PortalPath { segs: s })
    }
}
impl std::fmt::Display for PortalPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segs.is_empty() {
            f.write_str("/")
        } else {
            for s in &self.segs {
                write!(f, "/{s}")?;
            }
            Ok(())
        }
    }
}
