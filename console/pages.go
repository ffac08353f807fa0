package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"

	qrcode "github.com/skip2/go-qrcode"

	"portal/api"
)

// ui holds the templates and the static files: plain HTML, one script
// and one style sheet, all served from the console's own origin, so that
// the Content-Security-Policy default-src 'self' holds with nothing
// inline.
//
//go:embed ui
var ui embed.FS

var (
	pages  = template.Must(template.New("").ParseFS(ui, "ui/*.html"))
	static = func() http.Handler {
		sub, err := fs.Sub(ui, "ui/static")
		if err != nil {
			panic(err) // the embed directive guarantees the directory
		}
		return http.StripPrefix("/static/", http.FileServerFS(sub))
	}()
)

// notices are the lines a change leaves on the page it redirects to. The
// redirect names one by key, so that no text of the request is echoed.
var notices = map[string]string{
	"paired-full":  "Paired. The peer is verified: you gave its full ID.",
	"paired-short": "Paired by short ID. It stays unverified until you compare its full ID with your friend and press Confirm.",
	"confirmed":    "Confirmed: this peer is verified.",
	"renamed":      "Renamed.",
	"removed-peer": "The peer is removed: it can no longer reach this Portal.",
	"removed-app":  "The app is removed.",
	"named":        "This Portal's name is saved; peers see it at their next lookup.",
}

// routes adds the pages to the console's mux.
func (c *Console) routes() {
	m := c.mux
	m.HandleFunc("GET /{$}", c.home)
	m.HandleFunc("GET /live/peers", c.livePeers)
	m.HandleFunc("GET /live/network", c.liveNetwork)
	m.HandleFunc("GET /qr.png", c.qr)
	m.Handle("GET /static/", static)
	m.HandleFunc("POST /name", c.setName)
	m.HandleFunc("POST /pair", c.pair)
	m.HandleFunc("GET /peers/{id}", c.peer)
	m.HandleFunc("POST /peers/{id}/rename", c.renamePeer)
	m.HandleFunc("POST /peers/{id}/confirm", c.confirmPeer)
	m.HandleFunc("GET /peers/{id}/remove", c.askRemovePeer)
	m.HandleFunc("POST /peers/{id}/remove", c.removePeer)
	m.HandleFunc("GET /apps/{name}/remove", c.askRemoveApp)
	m.HandleFunc("POST /apps/{name}/remove", c.removeApp)
}

// home is the one page: this Portal, pairing, peers, apps, network.
func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	c.renderHome(w, r, http.StatusOK, pairForm{}, nil)
}

// renderHome renders the page with what the owner typed into the pairing
// or name form and the error it got, if any; a nil name shows the name
// the daemon has.
func (c *Console) renderHome(w http.ResponseWriter, r *http.Request, status int, pair pairForm, name *nameForm) {
	ctx := r.Context()
	csrf, _ := c.session(r)
	p := homePage{CSRF: csrf, Pair: pair, Notice: notices[r.URL.Query().Get("notice")]}
	p.Self = selfView{ID: c.cfg.ID, ShortID: c.cfg.ShortID}
	var who api.WhoAmI
	if err := c.call(ctx, "GET", "/public/meta/whoareyou", nil, &who); err == nil {
		p.Self.Name = who.Name
	}
	if name != nil {
		p.Self.Name, p.Self.NameError = name.Value, name.Error
	}
	var apps []api.App
	if err := c.call(ctx, "GET", "/protected/apps", nil, &apps); err != nil {
		p.Apps = []appView{{Error: "The apps could not be read: " + words(err)}}
	}
	for _, a := range apps {
		p.Apps = append(p.Apps, appViewOf(a))
	}
	p.Self.Apps = len(apps)
	p.Peers = c.peersOf(ctx, csrf)
	p.Network = c.networkOf(ctx)
	p.Self.Relays.Unknown = p.Network.Error != ""
	for _, rl := range p.Network.Relays {
		p.Self.Relays.Total++
		if rl.Registered {
			p.Self.Relays.Registered++
		}
	}
	c.page(w, status, "home", p)
}

// peersOf reads the peers with their tunnel status.
func (c *Console) peersOf(ctx context.Context, csrf string) peersView {
	var list []api.Peer
	if err := c.call(ctx, "GET", "/protected/peers", nil, &list); err != nil {
		return peersView{CSRF: csrf, Error: words(err)}
	}
	v := peersView{CSRF: csrf, Rows: make([]peerRow, 0, len(list))}
	now := c.cfg.Now()
	for _, p := range list {
		v.Rows = append(v.Rows, peerRowOf(p, now))
	}
	return v
}

// livePeers is the peers table alone, which the page fetches every two
// seconds.
func (c *Console) livePeers(w http.ResponseWriter, r *http.Request) {
	csrf, _ := c.session(r)
	c.page(w, http.StatusOK, "peers", c.peersOf(r.Context(), csrf))
}

// liveNetwork is the network section alone, fetched like the peers.
func (c *Console) liveNetwork(w http.ResponseWriter, r *http.Request) {
	c.page(w, http.StatusOK, "network", c.networkOf(r.Context()))
}

// qr is this Portal's full ID as a QR code, for a friend's phone.
func (c *Console) qr(w http.ResponseWriter, r *http.Request) {
	png, err := qrcode.Encode(c.cfg.ID, qrcode.Medium, -6)
	if err != nil {
		c.cfg.Log.Error("console: QR code", "err", err)
		http.Error(w, "no QR code", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Write(png)
}

// setName renames this Portal.
func (c *Console) setName(w http.ResponseWriter, r *http.Request) {
	name := c.formValue(w, r, "name")
	if err := c.call(r.Context(), "PUT", "/protected/self", map[string]string{"name": name}, nil); err != nil {
		c.renderHome(w, r, statusOf(err), pairForm{}, &nameForm{Value: name, Error: words(err)})
		return
	}
	c.cfg.Log.Info("console: Portal renamed")
	done(w, r, "/", "named", "")
}

// pair adds a peer by its full or short ID, with an optional name.
func (c *Console) pair(w http.ResponseWriter, r *http.Request) {
	form := pairForm{ID: strings.TrimSpace(c.formValue(w, r, "id")), Name: c.formValue(w, r, "name")}
	req := api.PutPeerRequest{ID: form.ID}
	if form.Name != "" {
		req.Name = &form.Name
	}
	var p api.Peer
	if err := c.call(r.Context(), "PUT", "/protected/peers", req, &p); err != nil {
		var ae *apiError
		switch {
		case errors.As(err, &ae) && ae.Code == "invalid_name":
			form.NameError = words(err)
		case errors.As(err, &ae) && ae.Status < 500:
			form.IDError = words(err)
		default:
			form.Error = words(err)
		}
		c.renderHome(w, r, statusOf(err), form, nil)
		return
	}
	notice := "paired-short"
	if p.Verified {
		notice = "paired-full"
	}
	done(w, r, "/", notice, "peer-"+p.ID)
}

// peer is one peer's page: its details, rename and the way to removal.
func (c *Console) peer(w http.ResponseWriter, r *http.Request) {
	p, err := c.peerByID(r.Context(), r.PathValue("id"))
	if err != nil {
		c.failed(w, err)
		return
	}
	csrf, _ := c.session(r)
	row := peerRowOf(p, c.cfg.Now())
	c.page(w, http.StatusOK, "peer", peerPage{CSRF: csrf, Peer: row, Name: p.Name})
}

func (c *Console) peerByID(ctx context.Context, id string) (api.Peer, error) {
	var p api.Peer
	err := c.call(ctx, "GET", "/protected/peers/"+url.PathEscape(id), nil, &p)
	return p, err
}

// renamePeer sets the owner's name for a peer; an empty name falls back to
// the one the peer declares. The API never adds a peer on a rename, so a
// peer removed meanwhile answers 404.
func (c *Console) renamePeer(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, name := r.PathValue("id"), c.formValue(w, r, "name")
	var p api.Peer
	if err := c.call(ctx, "PATCH", "/protected/peers/"+url.PathEscape(id), api.RenamePeerRequest{Name: &name}, &p); err != nil {
		var ae *apiError
		if !errors.As(err, &ae) || ae.Code != "invalid_name" {
			c.failed(w, err)
			return
		}
		if p, err = c.peerByID(ctx, id); err != nil {
			c.failed(w, err)
			return
		}
		csrf, _ := c.session(r)
		c.page(w, ae.Status, "peer", peerPage{CSRF: csrf, Peer: peerRowOf(p, c.cfg.Now()), Name: name, NameError: words(ae)})
		return
	}
	done(w, r, "/", "renamed", "peer-"+p.ID)
}

// confirmPeer marks a peer paired by short ID as verified.
func (c *Console) confirmPeer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := c.call(r.Context(), "POST", "/protected/peers/"+url.PathEscape(id)+"/confirm", nil, nil); err != nil {
		c.failed(w, err)
		return
	}
	done(w, r, "/", "confirmed", "peer-"+id)
}

// askRemovePeer is the confirmation step before a peer's removal.
func (c *Console) askRemovePeer(w http.ResponseWriter, r *http.Request) {
	p, err := c.peerByID(r.Context(), r.PathValue("id"))
	if err != nil {
		c.failed(w, err)
		return
	}
	csrf, _ := c.session(r)
	name := p.Name
	if name == "" {
		name = "this peer"
	}
	c.page(w, http.StatusOK, "confirm", confirmPage{
		CSRF: csrf, Title: "Remove " + name + "?",
		Text:   "Portal " + p.ID + " will no longer reach this Portal, and its apps' calls to it stop. Pairing again needs its ID.",
		Action: "/peers/" + url.PathEscape(p.ID) + "/remove", Back: "/peers/" + url.PathEscape(p.ID), Button: "Remove the peer",
	})
}

func (c *Console) removePeer(w http.ResponseWriter, r *http.Request) {
	if err := c.call(r.Context(), "DELETE", "/protected/peers/"+url.PathEscape(r.PathValue("id")), nil, nil); err != nil {
		c.failed(w, err)
		return
	}
	done(w, r, "/", "removed-peer", "peers")
}

// askRemoveApp is the confirmation step before an app's removal.
func (c *Console) askRemoveApp(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := c.call(r.Context(), "GET", "/protected/apps/"+url.PathEscape(name), nil, nil); err != nil {
		c.failed(w, err)
		return
	}
	csrf, _ := c.session(r)
	c.page(w, http.StatusOK, "confirm", confirmPage{
		CSRF: csrf, Title: "Remove the app " + name + "?",
		Text:   "Peers' calls to it are refused from now on, and its source addresses may no longer call the internal API. Its own data stays where the app keeps it.",
		Action: "/apps/" + url.PathEscape(name) + "/remove", Back: "/#apps", Button: "Remove the app",
	})
}

func (c *Console) removeApp(w http.ResponseWriter, r *http.Request) {
	if err := c.call(r.Context(), "DELETE", "/protected/apps/"+url.PathEscape(r.PathValue("name")), nil, nil); err != nil {
		c.failed(w, err)
		return
	}
	done(w, r, "/", "removed-app", "apps")
}

// failed shows an error of the daemon on a page of its own, with the
// daemon's status.
func (c *Console) failed(w http.ResponseWriter, err error) {
	c.page(w, statusOf(err), "message", message{Title: http.StatusText(statusOf(err)), Text: words(err)})
}

// statusOf is the status an API error had, 500 for any other.
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusInternalServerError
}

// done ends a change by sending the browser to a page (POST, redirect,
// GET), with a notice and a fragment to scroll to.
func done(w http.ResponseWriter, r *http.Request, path, notice, anchor string) {
	u := path + "?notice=" + url.QueryEscape(notice)
	if anchor != "" {
		u += "#" + url.PathEscape(anchor)
	}
	http.Redirect(w, r, u, http.StatusSeeOther)
}
