from django.urls import path
from polls import views

urlpatterns = [
    path("healthz", views.health),
    path("api/questions", views.questions),
]
