package console

import "html/template"

// The pages' data.
type (
	loginForm struct{ Error string }
	message   struct {
		Title, Text string
		LoginLink   bool // offer the login form
	}
	homePage struct{ ID, ShortID, CSRF string }
)

// pages are the console's templates: plain HTML, no inline script or
// style, which the Content-Security-Policy would refuse anyway.
var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.}} · Portal</title></head><body>{{end}}

{{define "login"}}{{template "head" "Log in"}}
<h1>Log in to this Portal</h1>
<form method="post" action="/login">
<label for="token">Owner token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
{{with .Error}}<strong role="alert">{{.}}</strong>{{end}}
<button type="submit">Log in</button>
</form>
<p>Or run <code>portald console</code> on the Portal's machine for a one-time login link.</p>
</body></html>{{end}}

{{define "message"}}{{template "head" .Title}}
<h1>{{.Title}}</h1>
<p>{{.Text}}</p>
{{if .LoginLink}}<p><a href="/login">Log in with the owner token</a></p>{{end}}
</body></html>{{end}}

{{define "home"}}{{template "head" "This Portal"}}
<h1>This Portal</h1>
<h2>{{.ShortID}}</h2>
<p>Full ID: <code>{{.ID}}</code></p>
<form method="post" action="/logout">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button type="submit">Log out</button>
</form>
</body></html>{{end}}
`))
