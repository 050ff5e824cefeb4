# Textes des pages en français. Les titres et messages de chaque résultat sont dans outcomes.ftl.

connected-title = Connexion réussie
connected-body = Votre compte { $connection } est maintenant connecté à { $app }. Vous pouvez fermer cette fenêtre.
back-to-app = Retour à { $app }
back-to-app-generic = Retour à l'application
try-again = Réessayer
contact-support = Contacter l'assistance
check-status = Voir l'état du service
reference-label = Référence :
actions-label = Ce que vous pouvez faire

result-gone-title = Cette page n'est plus disponible
result-gone-body = Les résultats de connexion sont conservés pendant une journée. Revenez à l'application pour vérifier si la connexion a bien été établie.
result-other-browser-title = Cette page est liée à un autre navigateur
result-other-browser-body = Le résultat d'une connexion ne s'affiche que dans le navigateur qui a servi à l'établir. Revenez à l'application pour vérifier si la connexion a bien été établie.
result-verifying-title = En attente de confirmation
result-verifying-body = L'application vérifie que cette connexion vous appartient. Actualisez cette page dans quelques instants.
result-pending-title = Connexion en cours
result-pending-body = La connexion n'est pas encore terminée. Actualisez cette page dans quelques instants.

not-found-title = Page introuvable
not-found-body = Il n'y a rien à cette adresse.
internal-title = Un problème est survenu de notre côté
internal-body = Veuillez réessayer dans quelques minutes.
uri-too-long-title = Cette adresse est trop longue
headers-too-large-title = Cette demande contient trop de données
payload-too-large-title = Cette demande est trop volumineuse
refused-body = La demande a été refusée avant toute action. Revenez à l'application et réessayez.
rate-limited-title = Trop de tentatives
rate-limited-body = Ce navigateur a tenté de se connecter trop souvent en peu de temps. Patientez une minute, puis revenez à l'application et réessayez.

credential-title = Connecter { $connection }
credential-intro-key = Saisissez votre clé d'API { $connection } pour le connecter à { $app }.
credential-intro-basic = Saisissez votre identifiant et votre mot de passe { $connection } pour le connecter à { $app }.
credential-key-label = Clé d'API
credential-username-label = Identifiant
credential-password-label = Mot de passe
credential-submit = Connecter
credential-privacy = Ce que vous saisissez est vérifié auprès de { $connection }, puis enregistré chiffré. Il n'est plus jamais affiché.
credential-missing = Veuillez remplir tous les champs.
credential-malformed = Cela ne semble pas correct : c'est trop long ou cela contient des caractères qu'une clé ne peut pas contenir. Vérifiez et réessayez.
form-unreadable-title = Ce formulaire n'a pas pu être lu

support-subject = Problème de connexion, référence { $reference }
support-body = Bonjour,

    La connexion de { $connection } à { $app } n'a pas fonctionné.

    Référence : { $reference }
    Connexion : { $connection }
    Heure (UTC) : { $time }
