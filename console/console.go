package console

import (
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"portal/internal/httpx"
)

// CookieName is the session cookie's name.
const CookieName = "portal_session"

// maxFormBytes bounds a console form's body: the largest holds a token.
const maxFormBytes = 8 << 10

// Config is what New needs. Fields marked required make New fail when left
// unset.
type Config struct {
	// Owner reports whether presented is the owner token, in constant
	// time (api.Token.Matches). Required.
	Owner func(presented string) bool
	// API is the internal API's handler, with every request it is given
	// taken as the owner's (the daemon wraps it to add the owner's
	// credential). Every change the console makes goes through it, so the
	// API's rules hold for both. Required.
	API http.Handler
	// Hosts are the names, besides IP literals and localhost, that the
	// console answers at: those of the owner's certificate for the admin
	// listener. A request for any other name is refused, since a page
	// elsewhere may have rebound its own name to this address.
	Hosts []string
	// ID and ShortID are this Portal's full and short ID, shown on the
	// first page. Required.
	ID, ShortID string
	// Now is the clock. Nil means time.Now; tests inject their own.
	Now func() time.Time
	// Log receives a line for each login and refusal. Required: the
	// console never falls back to a global logger.
	Log *slog.Logger
}

// Console is the owner's web console: an http.Handler for every path of
// the admin listener but /metrics. It is safe for concurrent use and
// starts no goroutines.
type Console struct {
	cfg  Config
	ss   *sessions
	mux  *http.ServeMux
	tmpl *template.Template
}

// New checks cfg and returns the console.
func New(cfg Config) (*Console, error) {
	switch {
	case cfg.Owner == nil:
		return nil, errors.New("console: Config.Owner is required")
	case cfg.API == nil:
		return nil, errors.New("console: Config.API is required")
	case cfg.ID == "" || cfg.ShortID == "":
		return nil, errors.New("console: Config.ID and Config.ShortID are required")
	case cfg.Log == nil:
		return nil, errors.New("console: Config.Log is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, ss: newSessions(cfg.Now), mux: http.NewServeMux(), tmpl: pages}
	c.mux.HandleFunc("GET /login", c.getLogin)
	c.mux.HandleFunc("POST /login", c.postLogin)
	c.mux.HandleFunc("POST /logout", c.postLogout)
	c.routes()
	c.mux.HandleFunc("/", c.notFound)
	return c, nil
}

// MintOnce returns a fresh one-time login token, single use and valid for
// OnceTTL; the caller, which has checked the owner token, builds the link
// /login?once=TOKEN from it.
func (c *Console) MintOnce() (string, error) { return c.ss.mintOnce() }

// ServeHTTP sets the console's headers on every answer, then refuses
// what needs a session and has none before any page runs: a GET without
// a session goes to the login form, a change without a session, its CSRF
// token and a same-origin Origin is refused with 403.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")

	if !httpx.LocalHost(r.Host, c.cfg.Hosts...) {
		c.cfg.Log.Warn("console: request for another host refused", "host", r.Host)
		c.page(w, http.StatusMisdirectedRequest, "message", message{Title: "Wrong address",
			Text: "This console answers only at an IP address, localhost or a name of its certificate, never at a name another site's page could point at it."})
		return
	}
	if r.URL.Path == "/login" || strings.HasPrefix(r.URL.Path, "/static/") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		c.mux.ServeHTTP(w, r) // the way in, and what its page needs
		return
	}
	csrf, ok := c.session(r)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if !ok {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
	default:
		if !ok || !sameOrigin(r, true) || !csrfMatches(csrf, c.formValue(w, r, "csrf")) {
			c.cfg.Log.Warn("console: change refused", "method", r.Method, "path", r.URL.Path, "session", ok,
				"origin", r.Header.Get("Origin"), "fetch_site", r.Header.Get("Sec-Fetch-Site"))
			c.page(w, http.StatusForbidden, "message", message{Title: "Forbidden",
				Text: "This change was refused: it needs a console session, its form and this console's own origin."})
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// session returns the CSRF token of the request's live session.
func (c *Console) session(r *http.Request) (csrf string, ok bool) {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return "", false
	}
	return c.ss.use(ck.Value)
}

// formValue reads one field of a POSTed form, with the body bounded.
func (c *Console) formValue(w http.ResponseWriter, r *http.Request, name string) string {
	if r.PostForm == nil {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			return ""
		}
	}
	return r.PostForm.Get(name)
}

// sameOrigin reports whether the request came from the console's own
// pages. A browser sends Origin with every POST, so a change must carry
// one (needOrigin); the login form accepts a request without one, from a
// client that is not a browser and so cannot be a forged cross-site
// request. Sec-Fetch-Site, when sent, must not say cross-site either.
//
// Under Referrer-Policy: no-referrer, which every console answer carries,
// a browser serializes the Origin of its own form POST as "null". That
// Origin is accepted only with Sec-Fetch-Site: same-origin, which pages
// cannot forge; a browser that sends neither a real Origin nor
// Sec-Fetch-Site is refused.
func sameOrigin(r *http.Request, needOrigin bool) bool {
	fetchSite := r.Header.Get("Sec-Fetch-Site")
	switch fetchSite {
	case "", "same-origin", "none":
	default:
		return false
	}
	origins := r.Header.Values("Origin")
	if len(origins) == 0 {
		return !needOrigin
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if len(origins) != 1 {
		return false
	}
	return origins[0] == scheme+"://"+r.Host || origins[0] == "null" && fetchSite == "same-origin"
}

// setSession starts a session and hands its cookie to the browser.
func (c *Console) setSession(w http.ResponseWriter, r *http.Request) error {
	id, _, err := c.ss.start()
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    id,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   r.TLS != nil,
	})
	return nil
}

// getLogin redeems a one-time link (?once=) or shows the login form.
func (c *Console) getLogin(w http.ResponseWriter, r *http.Request) {
	if !r.URL.Query().Has("once") {
		c.page(w, http.StatusOK, "login", loginForm{})
		return
	}
	if !c.ss.redeemOnce(r.URL.Query().Get("once")) {
		c.cfg.Log.Warn("console: one-time login link refused")
		c.page(w, http.StatusUnauthorized, "message", message{Title: "Login link refused",
			Text: "This login link was used or has expired; run `portald console` again.", LoginLink: true})
		return
	}
	c.loggedIn(w, r, "one-time link")
}

// postLogin logs in with the owner token typed into the form.
func (c *Console) postLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r, false) {
		c.cfg.Log.Warn("console: cross-origin login refused", "origin", r.Header.Get("Origin"))
		c.page(w, http.StatusForbidden, "message", message{Title: "Forbidden",
			Text: "A login must come from this console's own form.", LoginLink: true})
		return
	}
	if !c.cfg.Owner(c.formValue(w, r, "token")) {
		c.cfg.Log.Warn("console: wrong owner token at the login form")
		c.page(w, http.StatusUnauthorized, "login", loginForm{Error: "That is not this Portal's owner token."})
		return
	}
	c.loggedIn(w, r, "owner token")
}

// loggedIn starts the session and sends the browser to the first page.
func (c *Console) loggedIn(w http.ResponseWriter, r *http.Request, how string) {
	if err := c.setSession(w, r); err != nil {
		c.cfg.Log.Error("console: start a session", "err", err)
		c.page(w, http.StatusInternalServerError, "message", message{Title: "Error", Text: "The session could not be started."})
		return
	}
	c.cfg.Log.Info("console: owner logged in", "with", how)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// postLogout ends the session (ServeHTTP has checked it and its CSRF
// token) and takes the cookie back.
func (c *Console) postLogout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		c.ss.end(ck.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// LoggedIn reports whether r carries a live console session, which lets
// the admin listener serve /metrics to a logged-in browser.
func (c *Console) LoggedIn(r *http.Request) bool {
	_, ok := c.session(r)
	return ok
}

func (c *Console) notFound(w http.ResponseWriter, r *http.Request) {
	c.page(w, http.StatusNotFound, "message", message{Title: "Not found", Text: "No such page: " + r.URL.Path})
}

// page renders one template. The templates cannot fail on their data, so
// a failure is a bug, or a client gone away, and is only logged.
func (c *Console) page(w http.ResponseWriter, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := c.tmpl.ExecuteTemplate(w, name, data); err != nil {
		c.cfg.Log.Error("console: render", "page", name, "err", fmt.Errorf("console: %w", err))
	}
}
