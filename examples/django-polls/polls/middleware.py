def content_security_policy(get_response):
    def middleware(request):
        response = get_response(request)
        response["Content-Security-Policy"] = "default-src 'none'"
        return response

    return middleware
