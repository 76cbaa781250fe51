//! The small expression language of pipeline files.
//!
//! One grammar serves two uses: `where:` filters over the fields of an event
//! (`event_type == "click" and amount > 10`) and `expr:` derived features
//! over the other features of the same window (`click_count / event_count`).
//! Parsing yields an [`Expr`] tree; evaluation is over dynamic [`Val`]s. Null
//! propagates through arithmetic, division by zero gives null, and ordering
//! comparisons with null are false.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
    /// A field (in filters) or a feature (in derived features).
    Ident(String),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

/// A parse error with the byte offset in the expression text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} at character {}", .offset + 1)]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    End,
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let n: f64 = src[start..i].parse().map_err(|_| ExprError {
                offset: start,
                message: format!("invalid number {:?}", &src[start..i]),
            })?;
            out.push((start, Tok::Num(n)));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push((start, Tok::Ident(src[start..i].to_string())));
        } else if c == b'"' || c == b'\'' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                match b.get(i) {
                    None => {
                        return Err(ExprError {
                            offset: start,
                            message: "unterminated string".into(),
                        })
                    }
                    Some(&q) if q == quote => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let esc = b.get(i + 1).copied();
                        match esc {
                            Some(b'n') => s.push('\n'),
                            Some(b't') => s.push('\t'),
                            Some(e @ (b'\\' | b'"' | b'\'')) => s.push(e as char),
                            _ => {
                                return Err(ExprError {
                                    offset: i,
                                    message: "invalid escape in string".into(),
                                })
                            }
                        }
                        i += 2;
                    }
                    Some(_) => {
                        let ch = src[i..]
                            .chars()
                            .next()
                            .expect("index is on a char boundary");
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            out.push((start, Tok::Str(s)));
        } else if c == b'(' {
            i += 1;
            out.push((start, Tok::LParen));
        } else if c == b')' {
            i += 1;
            out.push((start, Tok::RParen));
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let op: &'static str = match two {
                "==" => "==",
                "!=" => "!=",
                "<=" => "<=",
                ">=" => ">=",
                "&&" => "and",
                "||" => "or",
                _ => match c {
                    b'+' => "+",
                    b'-' => "-",
                    b'*' => "*",
                    b'/' => "/",
                    b'<' => "<",
                    b'>' => ">",
                    b'!' => "not",
                    b'=' => {
                        return Err(ExprError {
                            offset: start,
                            message: "expected '==' for equality".into(),
                        });
                    }
                    _ => {
                        let ch = src[i..].chars().next().unwrap_or('?');
                        return Err(ExprError {
                            offset: start,
                            message: format!("unexpected character {ch:?}"),
                        });
                    }
                },
            };
            i += if matches!(op, "==" | "!=" | "<=" | ">=") || two == "&&" || two == "||" {
                2
            } else {
                1
            };
            out.push((start, Tok::Op(op)));
        }
    }
    out.push((src.len(), Tok::End));
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].1
    }
    fn offset(&self) -> usize {
        self.toks[self.pos].0
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].1.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    /// Binding power of an infix operator at the cursor.
    fn infix(&self) -> Option<(BinOp, u8)> {
        let op = match self.peek() {
            Tok::Op(o) => *o,
            Tok::Ident(w) if w == "and" => "and",
            Tok::Ident(w) if w == "or" => "or",
            _ => return None,
        };
        Some(match op {
            "or" => (BinOp::Or, 1),
            "and" => (BinOp::And, 2),
            "==" => (BinOp::Eq, 3),
            "!=" => (BinOp::Ne, 3),
            "<" => (BinOp::Lt, 4),
            "<=" => (BinOp::Le, 4),
            ">" => (BinOp::Gt, 4),
            ">=" => (BinOp::Ge, 4),
            "+" => (BinOp::Add, 5),
            "-" => (BinOp::Sub, 5),
            "*" => (BinOp::Mul, 6),
            "/" => (BinOp::Div, 6),
            _ => return None,
        })
    }

    fn expr(&mut self, min_bp: u8) -> Result<Expr, ExprError> {
        let mut lhs = self.prefix()?;
        while let Some((op, bp)) = self.infix() {
            if bp < min_bp {
                break;
            }
            self.next();
            let rhs = self.expr(bp + 1)?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn prefix(&mut self) -> Result<Expr, ExprError> {
        match self.next() {
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Ident(w) => Ok(match w.as_str() {
                "true" => Expr::Bool(true),
                "false" => Expr::Bool(false),
                "null" => Expr::Null,
                "not" => Expr::Not(Box::new(self.expr(3)?)),
                "and" | "or" => {
                    self.pos -= 1;
                    return self.err(format!("expected a value before '{w}'"));
                }
                _ => Expr::Ident(w),
            }),
            Tok::Op("-") => Ok(Expr::Neg(Box::new(self.expr(7)?))),
            Tok::Op("not") => Ok(Expr::Not(Box::new(self.expr(3)?))),
            Tok::LParen => {
                let e = self.expr(0)?;
                if *self.peek() != Tok::RParen {
                    return self.err("expected ')'");
                }
                self.next();
                Ok(e)
            }
            Tok::End => self.err("expected a value, found the end of the expression"),
            other => {
                self.pos -= 1;
                self.err(format!("expected a value, found {}", describe(&other)))
            }
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Op(o) => format!("'{o}'"),
        Tok::RParen => "')'".into(),
        Tok::LParen => "'('".into(),
        Tok::Num(n) => n.to_string(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Ident(i) => i.clone(),
        Tok::End => "the end".into(),
    }
}

/// Parses an expression.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let toks = tokenize(src)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.expr(0)?;
    if *p.peek() != Tok::End {
        return p.err(format!(
            "unexpected {} after the expression",
            describe(p.peek())
        ));
    }
    Ok(e)
}

impl Expr {
    /// Every identifier the expression refers to, in order of appearance.
    pub fn idents(&self) -> Vec<&str> {
        let mut v = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Ident(s) = e {
                v.push(s.as_str());
            }
        });
        v
    }

    fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Neg(a) | Expr::Not(a) => a.walk(f),
            Expr::Bin(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            _ => {}
        }
    }

    /// Replaces identifiers by slot numbers through `resolve`.
    pub fn compile(&self, resolve: &mut impl FnMut(&str) -> usize) -> Compiled {
        match self {
            Expr::Num(n) => Compiled::Const(Val::Num(*n)),
            Expr::Str(s) => Compiled::Const(Val::Str(s.clone().into())),
            Expr::Bool(b) => Compiled::Const(Val::Bool(*b)),
            Expr::Null => Compiled::Const(Val::Null),
            Expr::Ident(s) => Compiled::Slot(resolve(s)),
            Expr::Neg(a) => Compiled::Neg(Box::new(a.compile(resolve))),
            Expr::Not(a) => Compiled::Not(Box::new(a.compile(resolve))),
            Expr::Bin(op, a, b) => Compiled::Bin(
                *op,
                Box::new(a.compile(resolve)),
                Box::new(b.compile(resolve)),
            ),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Num(n) => write!(f, "{n}"),
            Expr::Str(s) => write!(f, "{s:?}"),
            Expr::Bool(b) => write!(f, "{b}"),
            Expr::Null => write!(f, "null"),
            Expr::Ident(s) => write!(f, "{s}"),
            Expr::Neg(a) => write!(f, "-({a})"),
            Expr::Not(a) => write!(f, "not ({a})"),
            Expr::Bin(op, a, b) => {
                let o = match op {
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    BinOp::Div => "/",
                    BinOp::Eq => "==",
                    BinOp::Ne => "!=",
                    BinOp::Lt => "<",
                    BinOp::Le => "<=",
                    BinOp::Gt => ">",
                    BinOp::Ge => ">=",
                    BinOp::And => "and",
                    BinOp::Or => "or",
                };
                write!(f, "({a} {o} {b})")
            }
        }
    }
}

/// A dynamic value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Null,
    Num(f64),
    Bool(bool),
    Str(std::borrow::Cow<'a, str>),
}

impl Val<'_> {
    pub fn truthy(&self) -> bool {
        matches!(self, Val::Bool(true))
    }
}

/// An expression whose identifiers are slot numbers.
#[derive(Debug, Clone)]
pub enum Compiled {
    Const(Val<'static>),
    Slot(usize),
    Neg(Box<Compiled>),
    Not(Box<Compiled>),
    Bin(BinOp, Box<Compiled>, Box<Compiled>),
}

impl Compiled {
    /// Evaluates with `slot(i)` giving the value of identifier `i`.
    pub fn eval<'a>(&'a self, slot: &impl Fn(usize) -> Val<'a>) -> Val<'a> {
        match self {
            Compiled::Const(v) => v.clone(),
            Compiled::Slot(i) => slot(*i),
            Compiled::Neg(a) => match a.eval(slot) {
                Val::Num(n) => Val::Num(-n),
                _ => Val::Null,
            },
            Compiled::Not(a) => match a.eval(slot) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Null,
            },
            Compiled::Bin(op, a, b) => {
                match op {
                    BinOp::And => {
                        return Val::Bool(a.eval(slot).truthy() && b.eval(slot).truthy());
                    }
                    BinOp::Or => {
                        return Val::Bool(a.eval(slot).truthy() || b.eval(slot).truthy());
                    }
                    _ => {}
                }
                let (x, y) = (a.eval(slot), b.eval(slot));
                match op {
                    BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => match (x, y) {
                        (Val::Num(x), Val::Num(y)) => {
                            let r = match op {
                                BinOp::Add => x + y,
                                BinOp::Sub => x - y,
                                BinOp::Mul => x * y,
                                _ => {
                                    if y == 0.0 {
                                        return Val::Null;
                                    }
                                    x / y
                                }
                            };
                            if r.is_finite() {
                                Val::Num(r)
                            } else {
                                Val::Null
                            }
                        }
                        _ => Val::Null,
                    },
                    BinOp::Eq => Val::Bool(x == y),
                    BinOp::Ne => Val::Bool(x != y),
                    _ => {
                        let ord = match (&x, &y) {
                            (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
                            (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
                            _ => None,
                        };
                        let Some(ord) = ord else {
                            return Val::Bool(false);
                        };
                        Val::Bool(match op {
                            BinOp::Lt => ord.is_lt(),
                            BinOp::Le => ord.is_le(),
                            BinOp::Gt => ord.is_gt(),
                            _ => ord.is_ge(),
                        })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_num(src: &str, vals: &[Option<f64>]) -> Val<'static> {
        let e = parse(src).expect("parses");
        let names = ["a", "b", "c"];
        let c = e.compile(&mut |s| names.iter().position(|n| *n == s).expect("known"));
        let vals = vals.to_vec();
        match c.eval(&move |i| vals[i].map_or(Val::Null, Val::Num)) {
            Val::Num(n) => Val::Num(n),
            Val::Bool(b) => Val::Bool(b),
            Val::Null => Val::Null,
            Val::Str(s) => Val::Str(s.into_owned().into()),
        }
    }

    #[test]
    fn arithmetic_precedence_and_nulls() {
        assert_eq!(
            eval_num("a + b * c", &[Some(1.0), Some(2.0), Some(3.0)]),
            Val::Num(7.0)
        );
        assert_eq!(
            eval_num("(a + b) * c", &[Some(1.0), Some(2.0), Some(3.0)]),
            Val::Num(9.0)
        );
        assert_eq!(
            eval_num("a - b - c", &[Some(10.0), Some(2.0), Some(3.0)]),
            Val::Num(5.0)
        );
        assert_eq!(eval_num("a / b", &[Some(1.0), Some(0.0), None]), Val::Null);
        assert_eq!(eval_num("a + c", &[Some(1.0), None, None]), Val::Null);
        assert_eq!(eval_num("-a * 2", &[Some(1.5), None, None]), Val::Num(-3.0));
    }

    #[test]
    fn filters() {
        let e = parse(r#"kind == "click" && (x > 3 or not flag)"#).expect("parses");
        assert_eq!(e.idents(), vec!["kind", "x", "flag"]);
        let c = e.compile(&mut |s| {
            ["kind", "x", "flag"]
                .iter()
                .position(|n| *n == s)
                .expect("known")
        });
        let v = |k: &'static str, x: f64, f: bool| {
            move |i: usize| match i {
                0 => Val::Str(k.into()),
                1 => Val::Num(x),
                _ => Val::Bool(f),
            }
        };
        assert!(c.eval(&v("click", 4.0, true)).truthy());
        assert!(c.eval(&v("click", 1.0, false)).truthy());
        assert!(!c.eval(&v("click", 1.0, true)).truthy());
        assert!(!c.eval(&v("view", 4.0, true)).truthy());
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(parse("a +").unwrap_err().offset, 3);
        assert_eq!(parse("a = 1").unwrap_err().offset, 2);
        assert_eq!(parse("(a + b").unwrap_err().offset, 6);
        assert!(parse("a b").is_err());
        assert!(parse("'open").is_err());
    }
}
