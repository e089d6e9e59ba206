//! The routing tree: one node per distinct template prefix, matched segment by segment.

use super::methods::{Method, MethodSet};
use super::template::{Glob, Segment};

type NodeId = usize;

#[derive(Debug, Default)]
struct Node {
    /// Sorted by key, for binary search.
    static_children: Vec<(Box<[u8]>, NodeId)>,
    pattern_children: Vec<(Glob, NodeId)>,
    param_child: Option<NodeId>,
    /// The methods of the templates ending here, if any does.
    endpoint: Option<MethodSet>,
}

/// What a walk found for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// A template matching the path serves the method.
    Allowed,
    /// Templates match the path, none serves the method; the union of their methods.
    WrongMethod(MethodSet),
    NoMatch,
}

#[derive(Debug)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: vec![Node::default()],
        }
    }
}

impl Tree {
    /// Adds a template (`prefix` is a base path) serving `methods`; methods of templates
    /// that end at the same node are merged.
    pub fn insert(&mut self, prefix: &[Segment], template: &[Segment], methods: MethodSet) {
        let mut node = 0;
        for segment in prefix.iter().chain(template) {
            node = self.child(node, segment);
        }
        let endpoint = &mut self.nodes[node].endpoint;
        *endpoint = Some(endpoint.unwrap_or_default().union(methods));
    }

    /// The child of `parent` for `segment`, created if missing.
    fn child(&mut self, parent: NodeId, segment: &Segment) -> NodeId {
        let fresh = self.nodes.len();
        let node = &mut self.nodes[parent];
        let existing = match segment {
            Segment::Static(text) => {
                match node
                    .static_children
                    .binary_search_by(|(key, _)| (**key).cmp(text))
                {
                    Ok(index) => Some(node.static_children[index].1),
                    Err(index) => {
                        node.static_children.insert(index, (text.clone(), fresh));
                        None
                    }
                }
            }
            Segment::Pattern(glob) => {
                match node
                    .pattern_children
                    .iter()
                    .find(|(other, _)| other == glob)
                {
                    Some((_, id)) => Some(*id),
                    None => {
                        node.pattern_children.push((glob.clone(), fresh));
                        None
                    }
                }
            }
            Segment::Param => {
                let id = *node.param_child.get_or_insert(fresh);
                (id != fresh).then_some(id)
            }
        };
        existing.unwrap_or_else(|| {
            self.nodes.push(Node::default());
            fresh
        })
    }

    /// Matches `rest`, the path after its leading `/` and without its trailing `/` (None
    /// for the root), against every template. Static children are tried first, then
    /// patterns, then the parameter; a branch that dead-ends falls back to the next one.
    ///
    /// This is a depth-first search of a tree, and a node is only ever compared with the
    /// request segment at its own depth, so the work is bounded by the number of nodes: it
    /// cannot blow up exponentially like regex backtracking. It stops at the first template
    /// serving the method; otherwise it visits every matching template to build `Allow`.
    pub fn walk(&self, rest: Option<&[u8]>, method: Option<Method>) -> Walk {
        let mut matched = None;
        if self.walk_from(0, rest, method, &mut matched) {
            return Walk::Allowed;
        }
        matched.map_or(Walk::NoMatch, Walk::WrongMethod)
    }

    fn walk_from(
        &self,
        id: NodeId,
        rest: Option<&[u8]>,
        method: Option<Method>,
        matched: &mut Option<MethodSet>,
    ) -> bool {
        let Some(node) = self.nodes.get(id) else {
            return false;
        };
        let Some(rest) = rest else {
            return match node.endpoint {
                Some(methods) if methods.allows(method) => true,
                Some(methods) => {
                    *matched = Some(matched.unwrap_or_default().union(methods));
                    false
                }
                None => false,
            };
        };
        let (segment, after) = match rest.iter().position(|&byte| byte == b'/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
            None => (rest, None),
        };
        if let Ok(index) = node
            .static_children
            .binary_search_by(|(key, _)| (**key).cmp(segment))
        {
            if self.walk_from(node.static_children[index].1, after, method, matched) {
                return true;
            }
        }
        for (glob, child) in &node.pattern_children {
            if glob.matches(segment) && self.walk_from(*child, after, method, matched) {
                return true;
            }
        }
        match node.param_child {
            Some(child) if !segment.is_empty() => self.walk_from(child, after, method, matched),
            _ => false,
        }
    }
}
